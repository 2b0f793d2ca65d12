"""Block offload on CPU: the offload "device" is float64 storage and the compute side float32, so a block
used before it was moved in fails with a dtype mismatch, and results equal the model without offload."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import WanTransformer3DModel
from peft import LoraConfig

from models.base import checkpoint_layers
from models.offload import enable_block_swap
from models.wan.adapter import WanBlockLayer, WanEmbedLayer, WanHeadLayer
from models.wan.tiny import TINY_TRANSFORMER

BLOCKS, OFFLOADED = 6, 4
TARGETS = ["attn1.to_q", "attn1.to_v", "attn2.to_k", "ffn.net.0.proj"]


def model(lora: bool) -> WanTransformer3DModel:
    torch.manual_seed(0)
    m = WanTransformer3DModel(**{**TINY_TRANSFORMER, "num_layers": BLOCKS}).eval().requires_grad_(False)
    if lora:
        m.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS))
        with torch.no_grad():
            for name, p in m.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.2)
    return m


def layers(m: WanTransformer3DModel) -> list[torch.nn.Module]:
    return [WanEmbedLayer(m), *(WanBlockLayer(b) for b in m.blocks), WanHeadLayer(m)]


def first_input() -> tuple:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(1, 36, 2, 4, 4, generator=g), torch.tensor([500.0]), torch.randn(1, 512, 24, generator=g),
            torch.randn(1, 5, 160, generator=g))


def run(layer_list: list, inputs: tuple) -> torch.Tensor:
    x = inputs
    for layer in layer_list:
        x = layer(x)
    return x


def watch_use(m: WanTransformer3DModel, swap, log: list) -> list:
    """Record each use of a block's linears, and check its weights are float32 (moved in) at that moment."""
    handles = []
    for i, block in enumerate(m.blocks):
        for lin in (mod for mod in block.modules() if isinstance(mod, torch.nn.Linear)):
            def hook(mod, args, i=i):
                assert mod.weight.dtype == torch.float32, f"block {i} used while offloaded"
                if i in swap.slots and (not log or log[-1] != ("use", i)):
                    log.append(("use", i))
            handles.append(lin.register_forward_pre_hook(hook))
    return handles


def check_order(events: list, offloaded: list[int]) -> None:
    """Each offloaded block: moved in before every use, moved out after it, never used while out."""
    state = dict.fromkeys(offloaded, "out")
    for kind, i in events:
        if kind == "use":
            assert state[i] == "in", f"block {i} used while out"
        else:
            assert state[i] != kind, f"block {i} moved {kind} twice"
            state[i] = kind
    assert all(v == "out" for v in state.values())  # every block back on the offload side at the end


def test_inference_equals_no_offload_and_moves_each_block_in_and_out():
    ref_model, m = model(False), model(False)
    with torch.no_grad():
        want = run(layers(ref_model), first_input())
        swap = enable_block_swap(layers(m), OFFLOADED, "cpu", offload_dtype=torch.float64)
        assert swap.offloaded == [2, 3, 4, 5]
        assert m.blocks[5].attn1.to_q.weight.dtype == torch.float64  # stored on the offload side
        log: list = []
        swap.events = log  # one timeline for moves and uses
        watching = watch_use(m, swap, log)
        got = run(layers(m), first_input())
        assert torch.equal(got, want)
        check_order(log, swap.offloaded)
        assert [e for e in log if e[0] == "use"] == [("use", i) for i in swap.offloaded]
        assert swap.max_resident == 2  # the running block + the prefetched one
        assert torch.equal(m(hidden_states=first_input()[0], timestep=first_input()[1],
                             encoder_hidden_states=first_input()[2], encoder_hidden_states_image=first_input()[3],
                             return_dict=False)[0], want)  # the hooks sit on the blocks: predict offloads too
    # The test can fail: without the hooks the offloaded weights are float64 and the block cannot run.
    for h in swap.handles + watching:
        h.remove()
    with torch.no_grad(), pytest.raises(RuntimeError, match="dtype|Double|Float"):
        run(layers(m), first_input())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_training_gives_equal_lora_gradients(checkpointing):
    def grads(m, offload: bool):
        layer_list = layers(m)
        swap = enable_block_swap(layer_list, OFFLOADED, "cpu", offload_dtype=torch.float64) if offload else None
        log: list = []
        if swap is not None:
            swap.events = log
            watch_use(m, swap, log)
        if checkpointing:
            layer_list = checkpoint_layers(layer_list)
        out = run(layer_list, first_input())
        params = [p for p in m.parameters() if p.requires_grad]
        return out, torch.autograd.grad(out.square().mean(), params), swap, log

    ref_out, ref_grads, _, _ = grads(model(True), False)
    m = model(True)
    out, got, swap, log = grads(m, True)
    assert torch.equal(out, ref_out)
    assert len(got) == 4 * BLOCKS * 2
    for u, v in zip(got, ref_grads):
        torch.testing.assert_close(u, v, rtol=0, atol=1e-7)
    check_order(log, swap.offloaded)
    uses = [i for kind, i in log if kind == "use"]
    # Forward runs each block once; under checkpointing backward runs it again (recomputation), in reverse.
    assert uses == swap.offloaded + (swap.offloaded[::-1] if checkpointing else [])
    # In for the forward, in again for the backward (whose matmuls would fail on float64 weights), in reverse.
    moves_in = [i for kind, i in log if kind == "in"]
    assert moves_in == swap.offloaded + swap.offloaded[::-1]
    assert swap.max_resident <= 2 and not swap.resident
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for n, p in m.named_parameters() if "lora_" in n)
    assert m.blocks[-1].attn1.to_q.base_layer.weight.dtype == torch.float64


def test_predict_path_with_diffusers_checkpointing_and_offload():
    ref = model(True)
    m = copy.deepcopy(ref)
    m.enable_gradient_checkpointing()
    swap = enable_block_swap(layers(m), OFFLOADED, "cpu", offload_dtype=torch.float64)
    x, t, text, image = first_input()
    outs = [mod(hidden_states=x, timestep=t, encoder_hidden_states=text, encoder_hidden_states_image=image,
                return_dict=False)[0] for mod in (ref, m)]
    g = [torch.autograd.grad(o.square().mean(), [p for p in mod.parameters() if p.requires_grad])
         for o, mod in zip(outs, (ref, m))]
    assert torch.equal(outs[0], outs[1])
    for u, v in zip(*g):
        torch.testing.assert_close(u, v, rtol=0, atol=1e-7)
    assert not swap.resident and swap.max_resident <= 2


def test_offloading_more_blocks_than_exist_is_an_error():
    with pytest.raises(ValueError, match="cannot offload 7 of 6 blocks"):
        enable_block_swap(layers(model(False)), 7, "cpu")
    assert enable_block_swap(layers(model(False)), 0, "cpu") is None
