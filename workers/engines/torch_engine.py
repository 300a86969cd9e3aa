"""The PyTorch backend: CPU and CUDA, fp32 / bf16 / fp16, SDPA attention."""

import logging

import numpy as np

from common.defaults import ENDOFTEXT_TOKEN, RERANK_NO_TOKEN, RERANK_YES_TOKEN
from common.errors import ModelLoadError
from workers.batching import Batch
from workers.device import cpu_threads, parse_device, torch_device
from workers.engines.base import Engine, EngineSpec, ModelInfo
from workers.engines.loading import load_pretrained

log = logging.getLogger(__name__)


class TorchEngine(Engine):
    def __init__(self, spec: EngineSpec):
        import torch

        self.spec = spec
        self.device = torch_device(parse_device(spec.device))
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads())
        self.tokenizer, net, random_weights = load_pretrained(spec.model, spec.task, spec.dtype)
        self.endoftext_id = token_id(self.tokenizer, ENDOFTEXT_TOKEN)
        self.pad_id = self.endoftext_id
        if spec.task == "rerank":
            self.yes_id = token_id(self.tokenizer, RERANK_YES_TOKEN)
            self.no_id = token_id(self.tokenizer, RERANK_NO_TOKEN)
            # Only two rows of the LM head are ever needed, and only at the last position.
            self.yes_no_rows = net.lm_head.weight[[self.no_id, self.yes_id]].detach().float().to(self.device)
            net = net.model
        self.net = net.to(self.device)
        self.dtype = next(self.net.parameters()).dtype
        self.info = ModelInfo(net.config.hidden_size, random_weights, spec.model)
        if random_weights:
            log.warning("%s holds RANDOM WEIGHTS: outputs are meaningless, only cost and agreement are", spec.model)

    def forward_embed(self, batch: Batch) -> np.ndarray:
        return self.last_hidden(batch).float().cpu().numpy()

    def forward_rerank(self, batch: Batch) -> np.ndarray:
        logits = self.last_hidden(batch).float() @ self.yes_no_rows.T  # [b, 2] = [no, yes]
        return (logits[:, 1] - logits[:, 0]).cpu().numpy()

    def last_hidden(self, batch: Batch):
        """[b, hidden] final hidden state (after the last RMSNorm) at each row's last real token."""
        import torch

        with torch.inference_mode():
            ids = torch.from_numpy(batch.input_ids).to(self.device)
            lengths = torch.from_numpy(batch.lengths).to(self.device)
            if batch.padding_side == "right":
                # Under causal attention a real token never sees the padding after it, so right
                # padding needs no padding mask at all and SDPA runs its plain causal kernel.
                hidden = self.net(input_ids=ids, use_cache=False).last_hidden_state
                return hidden[torch.arange(len(lengths), device=self.device), lengths - 1]
            mask, positions = left_padding_inputs(lengths, ids.shape[1], self.dtype)
            hidden = self.net(input_ids=ids, attention_mask=mask, position_ids=positions,
                              use_cache=False).last_hidden_state
            return hidden[:, -1]


def left_padding_inputs(lengths, seqlen: int, dtype):
    """A 4D additive causal + padding mask and position ids for left-padded rows.

    The mask uses the dtype's finite minimum, not -inf: a fully padded query row then softmaxes
    to a uniform row instead of NaN in half precision. Positions restart at 0 on the first real
    token, so left and right padding give the same vectors.
    """
    import torch

    device = lengths.device
    pos = torch.arange(seqlen, device=device)
    real = pos[None, :] >= (seqlen - lengths)[:, None]                     # [b, L] key is a real token
    allowed = real[:, None, :] & (pos[None, :, None] >= pos[None, None, :])  # [b, L(query), L(key)]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    positions = (pos[None, :] - (seqlen - lengths)[:, None]).clamp(min=0)
    return mask[:, None], positions


def token_id(tokenizer, token: str) -> int:
    ids = tokenizer.convert_tokens_to_ids([token])
    if not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id:
        raise ModelLoadError(f"the tokenizer has no {token!r} token: not a Qwen3 tokenizer?")
    return int(ids[0])
