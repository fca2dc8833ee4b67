"""skpo-verl: Skip-Connected Policy Optimization (SKPO) for verl 0.9.1, as a plugin.

`import verl` loads `skpo_verl.plugin` through the `verl.plugins` entry point; that module
only arms post-import hooks, so importing this package costs nothing in a Ray process.
"""

__version__ = "0.1.0"
