"""TIC (Lu et al., "Transformer-based Image Compression", DCC 2022), the codec of the paper's
released weights: its spec. The network is ``icmh_hub.codecs.tic_model.TIC``; TransTIC's
base-codec weights (``base_codec_{1..4}.pth.tar``) come through the index (tic_reference.json).
"""

from __future__ import annotations

from ..core.spec import CodecSpec, register_codec

PAD_MULTIPLE = 64  # six stride-2 stages between the image and z
QUALITIES = (1, 2, 3, 4)  # TransTIC's base_codec_1..4 (MSE lambdas 0.0018, 0.0035, 0.0067, 0.013)

SPEC = register_codec(
    CodecSpec(
        "tic",
        "icmh_hub.codecs.tic_model:build",
        {q: 128 for q in QUALITIES},
        encoder_points=("g_a1", "g_a3", "g_a5"),  # after the Swin stages at 1/2, 1/4, 1/8
        decoder_points=("g_s5", "g_s3", "g_s1"),  # after the transposed convs to 1/2, 1/4, 1/8
        pad_multiple=PAD_MULTIPLE,
        description="Lu et al. 2022, Transformer-based Image Compression (TransTIC's base codecs)",
        latent_coding="mean-scale",
        latent_channels={q: 192 for q in QUALITIES},
        memory_per_megapixel=2200,  # benchmarks.memory, rounded up to 50
    )
)
