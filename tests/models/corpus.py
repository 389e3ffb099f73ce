"""Real architectures built from their own library code (timm, transformers) with small
configurations and seeded random weights, exported with dynamic dims: a corpus that tests
symbolic shapes on what real models contain (rotary embeddings, grouped-query attention,
ConvNeXt's Conv -> Gelu), without downloads.

Calibration: random weights leave norm layers at identity and logits near zero, which pass
any tolerance. So every norm's scale is drawn from [0.5, 1.5] and its shift from N(0, 0.1),
and the output head is rescaled so the logits have a standard deviation of LOGIT_STD on a
seeded input: a wrong kernel then moves them visibly.

timm imports torchvision (timm.layers' FrozenBatchNorm2d); PyPI's torchvision must match the
installed torch build (a CUDA build of one with the CPU build of the other does not import).
What works: install torch and torchvision from the same index and build (the CPU wheels of
both from download.pytorch.org/whl/cpu, or the default PyPI pair together). The timm cases
skip with that reason when torchvision does not import.
"""

from __future__ import annotations

import numpy as np
import onnx

LOGIT_STD = 2.0


def _calibrate(module, inputs: tuple, head) -> None:
    import torch

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for sub in module.modules():
            weight = getattr(sub, "weight", None)
            is_norm = "norm" in type(sub).__name__.lower()
            if is_norm and isinstance(weight, torch.nn.Parameter):
                weight.copy_(0.5 + torch.rand(weight.shape, generator=gen))
                bias = getattr(sub, "bias", None)
                if isinstance(bias, torch.nn.Parameter):
                    bias.copy_(0.1 * torch.randn(bias.shape, generator=gen))
        out = module(*inputs)
        out = out if torch.is_tensor(out) else out[0]
        head.weight.mul_(LOGIT_STD / float(out.std()))
        if getattr(head, "bias", None) is not None:
            head.bias.mul_(LOGIT_STD / float(out.std()))


def llama_gqa() -> tuple[onnx.ModelProto, dict]:
    """A 2-layer Llama with grouped-query attention (4 query heads, 2 kv heads) and rotary
    embeddings; dynamic sequence length; inputs input_ids and attention_mask."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from anychip.compiler.torch_export import export_torch

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, attn_implementation="eager")
    model = LlamaForCausalLM(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              use_cache=False).logits

    wrapped = Logits(model).eval()
    ids = torch.randint(0, 256, (1, 16))
    mask = torch.ones(1, 16, dtype=torch.int64)
    _calibrate(wrapped, (ids, mask), model.lm_head)
    seq = torch.export.Dim("seq", min=2, max=128)
    proto = export_torch(wrapped, (ids, mask), ["input_ids", "attention_mask"], ["logits"],
                         dynamic_shapes=({1: seq}, {1: seq}))
    return proto, {"seq": (2, 128)}


def convnext_batch() -> tuple[onnx.ModelProto, dict]:
    """timm's ConvNeXt (atto) with 10 classes on 32x32 images; dynamic batch."""
    import timm
    import torch

    from anychip.compiler.torch_export import export_torch

    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    _calibrate(model, (x,), model.get_classifier())
    batch = torch.export.Dim("batch", min=1, max=8)
    proto = export_torch(model, (x,), ["pixel_values"], ["logits"],
                         dynamic_shapes=({0: batch},))
    return proto, {"batch": (1, 8)}


def _field_of(inner, field: str, **call):
    """A module returning one field of a transformers model's output, from input_ids and
    attention_mask."""
    import torch

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, **call)
            return getattr(out, field)

    return Field().eval()


def _text_inputs(batch: int, seq: int, vocab: int = 256):
    import torch

    return (torch.randint(0, vocab, (batch, seq)), torch.ones(batch, seq, dtype=torch.int64))


def _text_classifier_batch_seq(model) -> tuple[onnx.ModelProto, dict]:
    """A transformers sequence classifier's logits from input_ids and attention_mask,
    calibrated, exported with dynamic batch (1..4) and seq (2..64)."""
    import torch

    from anychip.compiler.torch_export import export_torch

    wrapped = _field_of(model, "logits")
    inputs = _text_inputs(2, 16)
    _calibrate(wrapped, inputs, model.classifier)
    batch, seq = torch.export.Dim("batch", min=1, max=4), torch.export.Dim("seq", min=2, max=64)
    proto = export_torch(wrapped, inputs, ["input_ids", "attention_mask"], ["logits"],
                         dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    return proto, {"batch": (1, 4), "seq": (2, 64)}


def distilbert_batch_seq() -> tuple[onnx.ModelProto, dict]:
    """transformers' DistilBERT (2 layers, 4 heads, dim 64) with a 5-label classifier; dynamic
    batch and sequence, inputs input_ids and attention_mask."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification


    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=256, dim=64, hidden_dim=128, n_layers=2, n_heads=4,
                              max_position_embeddings=128, num_labels=5, pad_token_id=0,
                              attn_implementation="eager")
    model = DistilBertForSequenceClassification(config).eval()
    return _text_classifier_batch_seq(model)


def bert_torchscript_named_per_input() -> tuple[onnx.ModelProto, dict]:
    """transformers' BERT (2 layers, 4 heads, dim 64) with a 5-label classifier, exported by
    the TorchScript exporter (torch.onnx.export(dynamo=False), as most ONNX files in the wild
    were) with dims named per input: input_ids [batch, seq], attention_mask [batch_size,
    sequence_length]. Its mask is built from Range(0, Shape(...)[i]) over each dim."""
    import io
    import warnings

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
                        num_labels=5, attn_implementation="eager")
    model = BertForSequenceClassification(config).eval()
    wrapped = _field_of(model, "logits")
    inputs = _text_inputs(2, 16)
    _calibrate(wrapped, inputs, model.classifier)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, inputs, buffer, dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                        "attention_mask": {0: "batch_size",
                                                           1: "sequence_length"}})
    return onnx.load_from_string(buffer.getvalue()), {"batch": (1, 4), "seq": (2, 64)}


def gpt_neox_seq() -> tuple[onnx.ModelProto, dict]:
    """transformers' GPT-NeoX (2 layers, parallel attention + MLP, partial rotary 25%); dynamic
    sequence, inputs input_ids and attention_mask."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from anychip.compiler.torch_export import export_torch

    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4,
                           max_position_embeddings=128, rotary_pct=0.25, bos_token_id=0,
                           eos_token_id=0, attn_implementation="eager")
    model = GPTNeoXForCausalLM(config).eval()
    wrapped = _field_of(model, "logits", use_cache=False)
    inputs = _text_inputs(1, 16)
    _calibrate(wrapped, inputs, model.get_output_embeddings())
    seq = torch.export.Dim("seq", min=2, max=64)
    proto = export_torch(wrapped, inputs, ["input_ids", "attention_mask"], ["logits"],
                         dynamic_shapes=({1: seq}, {1: seq}))
    return proto, {"seq": (2, 64)}


def t5_encoder_batch_seq() -> tuple[onnx.ModelProto, dict]:
    """transformers' T5 encoder (2 layers, relative position buckets, RMS norm); dynamic
    batch and sequence; the final norm is the calibrated head."""
    import torch
    from transformers import T5Config, T5EncoderModel

    from anychip.compiler.torch_export import export_torch

    torch.manual_seed(0)
    config = T5Config(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=32,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                      attn_implementation="eager")
    model = T5EncoderModel(config).eval()
    wrapped = _field_of(model, "last_hidden_state")
    inputs = _text_inputs(2, 16)
    _calibrate(wrapped, inputs, model.encoder.final_layer_norm)
    batch, seq = torch.export.Dim("batch", min=1, max=4), torch.export.Dim("seq", min=2, max=64)
    proto = export_torch(wrapped, inputs, ["input_ids", "attention_mask"], ["hidden"],
                         dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    return proto, {"batch": (1, 4), "seq": (2, 64)}


def whisper_encoder_batch() -> tuple[onnx.ModelProto, dict]:
    """transformers' Whisper encoder (Conv1d front end with GELU, 2 layers) on 16 mel bins x
    64 frames; dynamic batch only: the encoder requires exactly 2 x max_source_positions
    frames, so the time axis cannot be symbolic."""
    import torch
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from anychip.compiler.torch_export import export_torch

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=256, num_mel_bins=16, d_model=64, encoder_layers=2,
                           encoder_attention_heads=4, encoder_ffn_dim=128,
                           max_source_positions=32, pad_token_id=0, bos_token_id=0,
                           eos_token_id=0, decoder_start_token_id=0,
                           attn_implementation="eager")
    encoder = WhisperEncoder(config).eval()

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = encoder

        def forward(self, input_features):
            return self.inner(input_features).last_hidden_state

    wrapped = Hidden().eval()
    x = torch.randn(2, 16, 64)
    _calibrate(wrapped, (x,), encoder.layer_norm)
    batch = torch.export.Dim("batch", min=1, max=4)
    proto = export_torch(wrapped, (x,), ["input_features"], ["hidden"],
                         dynamic_shapes=({0: batch},))
    return proto, {"batch": (1, 4)}


def mobilebert_batch_seq() -> tuple[onnx.ModelProto, dict]:
    """transformers' MobileBERT (2 layers, 4 heads, hidden 64, bottlenecks of 32, two
    feed-forward networks per layer) with a 5-label classifier; dynamic batch and seq. Its
    trigram input pads x[:, 1:] back to `seq - 1 + 1` rows, which meets the library's dense
    layers on `seq`."""
    import torch
    from transformers import MobileBertConfig, MobileBertForSequenceClassification


    torch.manual_seed(0)
    config = MobileBertConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=128,
                              max_position_embeddings=130, num_labels=5, embedding_size=32,
                              intra_bottleneck_size=32, num_feedforward_networks=2,
                              pad_token_id=0, attn_implementation="eager")
    model = MobileBertForSequenceClassification(config).eval()
    return _text_classifier_batch_seq(model)


def wav2vec2_batch_samples() -> tuple[onnx.ModelProto, dict]:
    """transformers' wav2vec 2.0 audio classifier (convolutional feature encoder, grouped
    positional convolution, 2 layers, hidden 32) on raw samples; dynamic batch and sample
    count. Its export computes the frame count from Shape(input_values) (a truncating Div,
    a Reshape of that scalar, an Expand of the mask to [batch, 1, frames, frames])."""
    import torch
    import transformers as tf

    from anychip.compiler.torch_export import export_torch

    torch.manual_seed(0)
    config = tf.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, conv_dim=(16, 16, 16),
                               conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
                               num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                               classifier_proj_size=16, num_labels=5, vocab_size=32,
                               attn_implementation="eager")
    model = tf.Wav2Vec2ForSequenceClassification(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, input_values):
            return self.inner(input_values=input_values).logits

    wrapped = Logits().eval()
    x = torch.randn(2, 4000)
    _calibrate(wrapped, (x,), model.classifier)
    batch = torch.export.Dim("batch", min=1, max=4)
    samples = torch.export.Dim("samples", min=1600, max=8000)
    proto = export_torch(wrapped, (x,), ["input_values"], ["logits"],
                         dynamic_shapes=({0: batch, 1: samples},))
    return proto, {"batch": (1, 4), "samples": (1600, 8000)}


def vision_batch(family: str) -> tuple[onnx.ModelProto, dict]:
    """A CNN family from transformers' own modeling code (pure torch: no torchvision, so it
    runs in CI where timm cannot): ConvNeXt (Conv -> GELU, layer norm over channels),
    MobileNetV2 (depthwise, ReLU6, inverted residuals) or EfficientNet (depthwise, SiLU,
    squeeze-excite); tiny configurations, 10 classes on 32x32 images, dynamic batch."""
    import torch
    import transformers as tf

    from anychip.compiler.torch_export import export_torch

    torch.manual_seed(0)
    if family == "convnext":
        config = tf.ConvNextConfig(num_channels=3, hidden_sizes=[16, 32], depths=[1, 1],
                                   num_stages=2, num_labels=10, image_size=32)
        model = tf.ConvNextForImageClassification(config)
    elif family == "mobilenet_v2":
        config = tf.MobileNetV2Config(num_channels=3, image_size=32, depth_multiplier=0.25,
                                      num_labels=10)
        model = tf.MobileNetV2ForImageClassification(config)
    elif family == "efficientnet":
        config = tf.EfficientNetConfig(num_channels=3, image_size=32, width_coefficient=0.25,
                                       depth_coefficient=0.25, num_labels=10,
                                       hidden_dim=320)   # round_filters(1280) at width 0.25
        model = tf.EfficientNetForImageClassification(config)
    else:
        raise ValueError(f"unknown vision family {family!r}")
    model = model.eval()

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, pixel_values):
            return self.inner(pixel_values=pixel_values).logits

    wrapped = Logits().eval()
    x = torch.randn(2, 3, 32, 32)
    _calibrate(wrapped, (x,), model.classifier)
    batch = torch.export.Dim("batch", min=1, max=8)
    proto = export_torch(wrapped, (x,), ["pixel_values"], ["logits"],
                         dynamic_shapes=({0: batch},))
    return proto, {"batch": (1, 8)}


def torchvision_importable() -> tuple[bool, str]:
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure is the reason to skip
        return False, f"torchvision does not import ({type(exc).__name__}: {str(exc)[:120]})"
    return True, ""


def logits_std(proto: onnx.ModelProto, feed: dict) -> float:
    from anychip.compiler.reference import run_onnxruntime

    return float(np.std(run_onnxruntime(proto, feed, "corpus")[0]))
