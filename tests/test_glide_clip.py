"""GLIDE's noise-aware CLIP (sampling/glide_clip.py): tokenizer ids, loading, embeddings, refusals.

Offline and fast: a tiny configuration of the published architecture with random weights, and a tiny BPE
vocabulary written in the published gz format. Equivalence with OpenAI's published code (same weights, same
embeddings) was checked once against the glide-text2im sources, outside the suite.
"""

from __future__ import annotations

import gzip

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pack import import_submodule

glide_clip = import_submodule("sampling.glide_clip")
glide_tokenizer = import_submodule("sampling.glide_tokenizer")
ModelLoadError = import_submodule("sampling.model_errors").ModelLoadError

CPU = torch.device("cpu")
#: The published architecture, shrunk: 64 px images in 16 px patches, 12 text tokens, 2 blocks each.
TINY = glide_clip.GlideClipConfig(
    image_size=64,
    patch_size=16,
    n_vocab=600,
    max_text_len=12,
    n_embd=32,
    n_head_state_text=8,
    n_head_text=2,
    n_xf_blocks_text=2,
    n_head_state_image=8,
    n_head_image=4,
    n_xf_blocks_image=2,
    bpe_merges=6,
)
#: A header line as in GLIDE's file, the merges the tokenizer reads, then one it must not read.
TINY_MERGES = ["h e", "l l", "he ll", "hell o</w>", "c a", "ca t</w>"]
TINY_VOCAB = '"bpe_simple_vocab_16e6.txt#version: 0.2\n' + "\n".join([*TINY_MERGES, "l o"]) + "\n"
# Ids: the 256 byte symbols (printable ASCII '!'..'~' are 0..93), the same + '</w>' (256..511),
# the merges (512..517: he, ll, hell, hello</w>, ca, cat</w>), start 518, end 519.
START, END = 518, 519
IMAGE, TEXT = "clip_image_enc", "clip_text_enc"


def random_state(encoder_class, seed: int) -> dict[str, torch.Tensor]:
    """Random weights for a tiny encoder, in the shapes of its state dict (layer-norm gains near 1)."""
    with torch.device("meta"):
        shapes = {name: tensor.shape for name, tensor in encoder_class(TINY).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    return {
        name: (1.0 if name.endswith("ln.g") else 0.0) + 0.1 * torch.randn(shape, generator=generator)
        for name, shape in shapes.items()
    }


@pytest.fixture(scope="module")
def states():
    return {IMAGE: random_state(glide_clip.GlideImageEncoder, 1), TEXT: random_state(glide_clip.GlideTextEncoder, 2)}


def write_folder(folder, states, formats=("pt",), vocab=TINY_VOCAB):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, state in states.items():
        if "pt" in formats:
            torch.save(state, folder / f"{stem}.pt")
        if "safetensors" in formats:
            save_file(state, str(folder / f"{stem}.safetensors"))
    if vocab is not None:
        with gzip.open(folder / glide_clip.VOCAB_NAME, "wb") as handle:
            handle.write(vocab.encode("utf-8"))
    return folder


def load(folder, **kwargs):
    return glide_clip.load_glide_clip(folder, device=CPU, config=TINY, **kwargs)


@pytest.fixture(scope="module")
def clip(states, tmp_path_factory):
    return load(write_folder(tmp_path_factory.mktemp("glide") / "pt", states))


def pictures(count: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# -- tokenizer ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = write_folder(tmp_path_factory.mktemp("vocab"), {}) / glide_clip.VOCAB_NAME
    return glide_tokenizer.GlideTokenizer.from_file(path, TINY.bpe_merges, "from the test")


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("hello", [515]),  # h e l l o</w> -> he l l -> he ll -> hell o</w> -> hello</w>
        ("Hello, cat!", [515, 256 + 11, 517, 256 + 0]),  # ',' and '!' are words of their own
        ("  hello \n\t cat  ", [515, 517]),
        ("lol", [75, 78, 256 + 75]),  # the 'l o' merge is past the merges read: no merge applies
        ("café", [516, 69, 127, 256 + 102]),  # é is the bytes C3 A9, symbols 127 and 102
        ("it's", [72, 256 + 83, 6, 256 + 82]),  # the contraction 's is a word
        ("42", [256 + 19, 256 + 17]),  # digits one by one
        ("<|endoftext|>", [END]),
    ],
)
def test_tokenizer_ids(tokenizer, text, ids):
    assert tokenizer.encode(text) == ids


@pytest.mark.parametrize(
    ("typed", "clean"),
    [
        ("it\u2019s", "it's"),  # curly quote
        ("\ufb01sh", "fish"),  # Latin ligature
        ("\uff43\uff41\uff54", "cat"),  # fullwidth letters
        ("\ufeffcat\x07", "cat"),  # byte order mark, control character
        ("fish &amp; chips", "fish & chips"),
        ("cafe\u0301", "café"),  # NFC
    ],
)
def test_tokenizer_cleans_text_as_published(tokenizer, typed, clean):
    assert tokenizer.encode(typed) == tokenizer.encode(clean)


def test_padded_tokens_and_len(tokenizer):
    assert tokenizer.start_token == START and tokenizer.end_token == END
    assert tokenizer.padded_tokens_and_len([515], 12) == ([START, 515, END] + [0] * 9, 3)
    long, length = tokenizer.padded_tokens_and_len(tokenizer.encode("hello " * 20), 12)
    assert long == [START] + [515] * 10 + [END] and length == 12


# -- the architecture --------------------------------------------------------------------------
def test_published_config_keys_shapes_and_size():
    """The real configuration's parameter names and shapes are those of OpenAI's checkpoints."""
    with torch.device("meta"):
        image, text = glide_clip.GlideImageEncoder(), glide_clip.GlideTextEncoder()
    image_shapes = {name: tuple(t.shape) for name, t in image.state_dict().items()}
    text_shapes = {name: tuple(t.shape) for name, t in text.state_dict().items()}
    assert len(image_shapes) == 188 and len(text_shapes) == 185
    assert image_shapes["blocks.input.w_t"] == (1000, 768)
    assert image_shapes["blocks.input.patch_proj"] == (768, 3, 4, 4)
    assert image_shapes["blocks.input.w_pos"] == (257, 768)
    assert image_shapes["blocks.block_11.f_mlp.f_1.w"] == (3072, 768)
    assert image_shapes["blocks.output.f.w"] == (512, 768)
    assert text_shapes["blocks.input.w_voc"] == (65536, 512)
    assert text_shapes["blocks.input.w_pos"] == (77, 512)
    assert text_shapes["blocks.block_0.f_attn.ln.g"] == (512,)
    assert "blocks.block_0.f_attn.f_k.b" not in text_shapes  # the key projection has no bias
    assert sum(p.numel() for p in image.parameters()) + sum(p.numel() for p in text.parameters()) == 158_123_264


def test_plain_state_dict_loads_strictly(states, tmp_path):
    folder = write_folder(tmp_path, states)
    encoder = glide_clip.GlideImageEncoder(TINY)
    encoder.load_state_dict(torch.load(folder / f"{IMAGE}.pt", weights_only=True), strict=True)


# -- embeddings --------------------------------------------------------------------------------
def test_pt_and_safetensors_give_the_same_embeddings(states, tmp_path):
    from_pt = load(write_folder(tmp_path / "pt", states, ("pt",)))
    from_safetensors = load(write_folder(tmp_path / "st", states, ("safetensors",)))
    images, steps = pictures(3), torch.tensor([0, 500, 999])
    texts = ["hello", "a cat", ""]
    for clip in (from_pt, from_safetensors):
        assert clip.noise_aware and clip.image_size == 64 and clip.temperature == pytest.approx(0.01)
    image_embeddings = from_pt.image_embeddings(images, steps)
    text_embeddings = from_pt.text_embeddings(texts)
    assert torch.equal(image_embeddings, from_safetensors.image_embeddings(images, steps))
    assert torch.equal(text_embeddings, from_safetensors.text_embeddings(texts))
    for embeddings, count in ((image_embeddings, 3), (text_embeddings, 3)):
        assert embeddings.shape == (count, TINY.n_embd) and embeddings.dtype == torch.float32
        assert torch.allclose(embeddings.norm(dim=-1), torch.ones(count), atol=1e-5)
    assert not torch.allclose(text_embeddings[0], text_embeddings[1])


def test_safetensors_preferred_over_pt(states, tmp_path):
    folder = write_folder(tmp_path / "both", states, ("safetensors",))
    write_folder(folder, {IMAGE: random_state(glide_clip.GlideImageEncoder, 9)}, ("pt",))
    reference = load(write_folder(tmp_path / "st", states, ("safetensors",)))
    assert torch.equal(load(folder).image_embeddings(pictures(2)), reference.image_embeddings(pictures(2)))


def test_timesteps_change_the_image_embedding(clip):
    images = pictures(1).expand(3, -1, -1, -1)
    embeddings = clip.image_embeddings(images, torch.tensor([0, 300, 999]))
    assert not torch.allclose(embeddings[0], embeddings[1], atol=1e-4)
    assert not torch.allclose(embeddings[1], embeddings[2], atol=1e-4)
    assert torch.equal(clip.image_embeddings(images), clip.image_embeddings(images, torch.zeros(3)))


@pytest.mark.parametrize("timesteps", [torch.tensor([1000]), torch.tensor([-1]), torch.tensor([1, 2])])
def test_bad_timesteps_refused(clip, timesteps):
    with pytest.raises(ValueError, match="timesteps"):
        clip.image_embeddings(pictures(1), timesteps)


def test_larger_pictures_are_resized_inside(clip):
    large = pictures(2, size=256)
    small = F.interpolate(large, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    steps = torch.tensor([10, 700])
    assert torch.allclose(clip.image_embeddings(large, steps), clip.image_embeddings(small, steps), atol=1e-6)
    assert torch.allclose(clip.image_embeddings(large.half(), steps), clip.image_embeddings(small, steps), atol=2e-2)


def test_text_features_read_the_end_token_causally(clip):
    """Each prompt's feature is taken at its end token, and attention is causal: later tokens do not matter."""
    framed, length = clip.tokenizer.padded_tokens_and_len(clip.tokenizer.encode("hello cat"), TINY.max_text_len)
    tokens = torch.tensor([framed, framed[:length] + [7] * (TINY.max_text_len - length)])
    features = clip.text_encoder(tokens, torch.tensor([length, length]))
    assert torch.allclose(features[0], features[1], atol=1e-6)
    shorter = clip.text_encoder(tokens[:1], torch.tensor([length - 1]))
    assert not torch.allclose(features[0], shorter[0], atol=1e-4)


def test_empty_batches(clip):
    assert clip.text_embeddings([]).shape == (0, TINY.n_embd)
    assert clip.image_embeddings(pictures(0, size=128)).shape == (0, TINY.n_embd)


def test_lower_precision_follows_float32(states, tmp_path):
    folder = write_folder(tmp_path, states)
    full, half = load(folder), load(folder, dtype=torch.bfloat16)
    assert half.text_encoder.blocks["input"].w_voc.dtype == torch.bfloat16
    images, steps = pictures(2), torch.tensor([5, 900])
    cosine = (full.image_embeddings(images, steps) * half.image_embeddings(images, steps)).sum(-1)
    assert half.image_embeddings(images, steps).dtype == torch.float32 and bool((cosine > 0.99).all())


def test_release(states, tmp_path):
    clip = load(write_folder(tmp_path, states))
    clip.release()
    assert clip.released
    with pytest.raises(ModelLoadError, match="released"):
        clip.text_embeddings(["hello"])


# -- folders and refusals ----------------------------------------------------------------------
def test_is_glide_clip_folder(states, tmp_path):
    assert glide_clip.GLIDE_FILES == ("clip_image_enc.pt", "clip_text_enc.pt", "bpe_simple_vocab_16e6.txt.gz")
    assert glide_clip.is_glide_clip_folder(write_folder(tmp_path / "pt", states))
    assert glide_clip.is_glide_clip_folder(write_folder(tmp_path / "st", states, ("safetensors",)))
    assert not glide_clip.is_glide_clip_folder(write_folder(tmp_path / "no-vocab", states, vocab=None))
    assert not glide_clip.is_glide_clip_folder(tmp_path / "absent")


def test_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist.*clip_guided.ipynb"):
        load(tmp_path / "absent")


@pytest.mark.parametrize("missing", glide_clip.GLIDE_FILES)
def test_missing_file(states, tmp_path, missing):
    folder = write_folder(tmp_path, states)
    (folder / missing).unlink()
    with pytest.raises(ModelLoadError, match=rf"{missing}.*missing.*glide_model_cache"):
        load(folder)


def test_pickle_refused_by_weights_only(states, tmp_path):
    folder = write_folder(tmp_path, states)
    torch.save({"blocks.input.w_t": torch.nn.Linear(2, 2)}, folder / f"{TEXT}.pt")
    with pytest.raises(ModelLoadError, match=r"clip_text_enc\.pt is not a plain state dict.*Linear.*save_file"):
        load(folder)


def test_not_a_state_dict(states, tmp_path):
    folder = write_folder(tmp_path, states)
    torch.save(torch.zeros(3), folder / f"{IMAGE}.pt")
    with pytest.raises(ModelLoadError, match=r"clip_image_enc\.pt holds a Tensor that is not a state dict"):
        load(folder)


def test_wrong_shapes_refused(states, tmp_path):
    state = dict(states[IMAGE])
    state["blocks.input.w_t"] = torch.zeros(10, 16)
    folder = write_folder(tmp_path, {**states, IMAGE: state})
    with pytest.raises(ModelLoadError, match=r"clip_image_enc\.pt is not GLIDE's .* image encoder.*w_t is \(10, 16\)"):
        load(folder)


@pytest.mark.parametrize("formats", [("pt",), ("safetensors",)])
def test_another_clip_refused(states, tmp_path, formats):
    other = {"visual.proj": torch.zeros(4, 4), "text_projection": torch.zeros(4, 4)}
    folder = write_folder(tmp_path, {**states, TEXT: other}, formats)
    with pytest.raises(ModelLoadError, match=r"clip_text_enc\.\w+ is not GLIDE's .* text encoder.*missing.*unknown"):
        load(folder)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_weights(states, tmp_path, suffix):
    folder = write_folder(tmp_path, states, (suffix[1:],))
    path = folder / f"{IMAGE}{suffix}"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=rf"clip_image_enc\{suffix} .*(damaged|incomplete)"):
        load(folder)


def test_garbage_pt(states, tmp_path):
    folder = write_folder(tmp_path, states)
    (folder / f"{TEXT}.pt").write_bytes(b"not a checkpoint " * 40)
    with pytest.raises(ModelLoadError, match=r"clip_text_enc\.pt cannot be read.*damaged"):
        load(folder)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"plain text, not gzip", "cannot be read"),
        (gzip.compress(TINY_VOCAB.encode())[:-12], "cannot be read"),
        (gzip.compress(b"#version: 0.2\nh e\nl l\n"), "it has 2"),
        (gzip.compress(b"#version: 0.2\n" + b"\xff\xfe\n" * 8), "cannot be read"),
    ],
    ids=["not-gzip", "truncated", "too-few-merges", "not-utf8"],
)
def test_unreadable_vocabulary(states, tmp_path, content, problem):
    folder = write_folder(tmp_path, states)
    (folder / glide_clip.VOCAB_NAME).write_bytes(content)
    with pytest.raises(ModelLoadError, match=rf"bpe_simple_vocab_16e6\.txt\.gz .*{problem}.*glide_text2im/tokenizer"):
        load(folder)
