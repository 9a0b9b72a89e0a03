"""Model shapes, output ranges, and the pickle-free model files (round trip and refusals)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from advdenoise.core.errors import PipelineError
from advdenoise.models.autoencoder import Autoencoder, UpsampleConv
from advdenoise.models.classifier import Classifier, fold_batch_norm
from advdenoise.models.files import MODEL_FILE, load_autoencoder, load_classifier, save_model
from advdenoise.models.inference import predict_features, predict_logits, reconstruct
from advdenoise.models.resnet import ResNet18


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_classifier_shapes(size: int) -> None:
    model = Classifier(size, [4, 8, 8, 16], num_classes=3).eval()
    x = torch.rand(5, 1, size, size)
    assert model(x).shape == (5, 3)
    assert model.features(x).shape == (5, 16)
    assert model.hparams == {"image_size": size, "channels": [4, 8, 8, 16], "num_classes": 3,
                             "dropout": 0.2}  # fmt: skip


@pytest.mark.parametrize("train", [True, False])
def test_pooling_before_relu_is_the_conventional_block_bit_for_bit(train: bool) -> None:
    model = Classifier(32, [4, 8]).train(train)
    layers = list(model.body)
    pools = [i for i, m in enumerate(layers) if isinstance(m, torch.nn.MaxPool2d)]
    for i in pools:  # conv-BN-ReLU-pool, as the blocks are usually written
        layers[i], layers[i + 1] = layers[i + 1], layers[i]
    conventional = torch.nn.Sequential(*layers)
    assert [type(m) for m in conventional] != [type(m) for m in model.body]
    x = (torch.rand(6, 1, 32, 32) - 0.3).requires_grad_(True)  # plenty of negative pre-activations
    x2 = x.detach().clone().requires_grad_(True)
    ours = model.body(x - 0.5)
    ref = conventional(x2 - 0.5)
    assert torch.equal(ours, ref)
    g = torch.randn_like(ref)
    ours.backward(g)
    ref.backward(g)
    assert x.grad is not None and torch.equal(x.grad, x2.grad)


def test_resnet18_is_torchvisions_with_a_grey_stem_and_round_trips(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    model = ResNet18(32, num_classes=3).eval()
    reference = resnet18(weights=None, num_classes=3)
    ours = {k: v.shape for k, v in model.net.state_dict().items()}
    theirs = {k: v.shape for k, v in reference.state_dict().items()}
    assert ours == {**theirs, "conv1.weight": (64, 1, 7, 7)}  # one input channel, else the same
    x = torch.rand(4, 1, 32, 32)
    assert model(x).shape == (4, 3) and model.features(x).shape == (4, 512)
    save_model(model, tmp_path / MODEL_FILE)
    loaded = load_classifier(tmp_path, image_size=32)  # any architecture's file, folded
    assert loaded.hparams == {"image_size": 32, "num_classes": 3, "zero_init_residual": False}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(PipelineError, match=r"holds a 'resnet18' model, expected a 'autoencoder'"):
        load_autoencoder(tmp_path)


def test_classifier_refuses_too_small_images() -> None:
    with pytest.raises(ValueError, match="too small"):
        Classifier(8, [4, 4, 4, 4])


def test_autoencoder_shapes_and_range() -> None:
    model = Autoencoder(32, [4, 8], latent_channels=3).eval()
    x = torch.rand(4, 1, 32, 32)
    out = model(x)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    z = model.encode(x)
    assert z.shape == (4, 3, 8, 8)
    assert model.decode(z).shape == x.shape


@pytest.mark.parametrize(("c_in", "c_out", "size"), [(4, 1, 8), (3, 5, 5), (16, 1, 32)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_upsample_conv_is_nearest_upsampling_then_the_conv(
    c_in: int, c_out: int, size: int, layout: torch.memory_format
) -> None:
    fused = UpsampleConv(c_in, c_out).to(memory_format=layout)
    plain = torch.nn.Conv2d(c_in, c_out, 3, padding=1)
    plain.load_state_dict(fused.state_dict())  # the same parameters under the same keys
    x = torch.randn(2, c_in, size, size).contiguous(memory_format=layout).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    out = fused(x)
    ref = plain(torch.nn.functional.interpolate(x2, scale_factor=2, mode="nearest"))
    assert out.shape == (2, c_out, 2 * size, 2 * size)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    out.backward(g)
    ref.backward(g)  # training and attacks follow these gradients
    assert x.grad is not None and x2.grad is not None and fused.weight.grad is not None
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused.bias.grad, plain.bias.grad, rtol=1e-4, atol=1e-4)


def test_batched_prediction_matches_single_pass() -> None:
    model = Classifier(32, [4, 8]).eval()
    x = torch.rand(10, 1, 32, 32)
    with torch.inference_mode():
        full = model(x)
    assert torch.allclose(predict_logits(model, x, 3, "cpu"), full, atol=1e-5)
    u8 = (x * 255).round().to(torch.uint8)
    assert torch.allclose(
        predict_logits(model, u8, 4, "cpu"), predict_logits(model, u8.float() / 255, 10, "cpu")
    )
    assert predict_features(model, x, 4, "cpu").shape == (10, 8)
    ae = Autoencoder(32, [4], 2)
    assert reconstruct(ae, x, 4, "cpu").shape == x.shape


def test_round_trip_identical_outputs(tmp_path: Path) -> None:
    cnn = Classifier(32, [4, 8], dropout=0.3)
    cnn.train()
    cnn(torch.rand(8, 1, 32, 32))  # move the batch-norm running stats away from their init
    cnn.eval()
    ae = Autoencoder(32, [4, 8], 2).eval()
    save_model(cnn, tmp_path / "cnn" / MODEL_FILE)
    save_model(ae, tmp_path / "ae.pt")
    x = torch.rand(3, 1, 32, 32)
    cnn2 = load_classifier(tmp_path / "cnn")  # a directory means <dir>/model.pt
    ae2 = load_autoencoder(tmp_path / "ae.pt")
    assert not cnn2.training and not ae2.training
    assert cnn2.hparams == cnn.hparams
    stored = torch.load(tmp_path / "cnn" / MODEL_FILE, weights_only=True)["state_dict"]
    for a, b in ((cnn.state_dict(), stored), (ae.state_dict(), ae2.state_dict())):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    with torch.inference_mode():  # channels-last, batch norm folded: float rounding only
        torch.testing.assert_close(cnn(x), cnn2(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ae(x), ae2(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("arch", "size"), [("paper", 32), ("paper", 128), ("resnet18", 32)]
)  # 128 px: with the paper's stride-2 stem; resnet18: blocks, shortcuts and downsampling
def test_folded_batch_norm_computes_the_trained_function(arch: str, size: int) -> None:
    cnn = Classifier(size, [4, 8]) if arch == "paper" else ResNet18(size)
    cnn.train()
    for _ in range(3):  # running statistics away from their init
        cnn(torch.rand(8, 1, size, size) * 0.5)
    cnn.eval()
    folded = fold_batch_norm(cnn)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(m.bias is not None for m in folded.modules() if isinstance(m, torch.nn.Conv2d))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in cnn.modules())  # the original stays
    x = torch.rand(4, 1, size, size, requires_grad=True)
    xf = x.detach().clone().requires_grad_(True)
    torch.testing.assert_close(folded.features(xf), cnn.features(x), rtol=1e-5, atol=1e-6)
    cnn(x).sum().backward()
    folded(xf).sum().backward()  # the input gradients that attacks follow
    assert xf.grad is not None and x.grad is not None
    torch.testing.assert_close(xf.grad, x.grad, rtol=1e-4, atol=1e-6)
    assert not any(p.requires_grad for p in folded.parameters())
    with pytest.raises(ValueError, match="cannot save"):
        save_model(folded, Path("unused.pt"))


def test_refuses_non_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(PipelineError, match=r"tensor\.pt: not a model file"):
        load_classifier(path)
    path = tmp_path / "bare.pt"
    torch.save(Classifier(32, [4]).state_dict(), path)  # a bare state dict lacks kind/hparams
    with pytest.raises(PipelineError, match=r"bare\.pt: not a model file"):
        load_classifier(path)


def test_refuses_wrong_kind(tmp_path: Path) -> None:
    save_model(Autoencoder(32, [4], 2), tmp_path / "ae.pt")
    with pytest.raises(PipelineError, match=r"ae\.pt: holds a 'autoencoder' model"):
        load_classifier(tmp_path / "ae.pt")


def test_refuses_model_for_another_image_size(tmp_path: Path) -> None:
    save_model(Classifier(32, [4, 8]), tmp_path / "cnn.pt")
    save_model(Autoencoder(32, [4], 2), tmp_path / "ae.pt")
    assert load_classifier(tmp_path / "cnn.pt", image_size=32).hparams["image_size"] == 32
    with pytest.raises(
        PipelineError, match=r"cnn\.pt: the classifier expects 32 px images, the data holds 64 px"
    ):
        load_classifier(tmp_path / "cnn.pt", image_size=64)
    with pytest.raises(PipelineError, match=r"ae\.pt: the autoencoder expects 32 px"):
        load_autoencoder(tmp_path / "ae.pt", image_size=64)


def test_refuses_mismatched_architecture(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    model = Classifier(32, [4, 8])
    payload = {"kind": "classifier", "hparams": {**model.hparams, "channels": [4, 16]},
               "state_dict": model.state_dict()}  # fmt: skip
    torch.save(payload, path)
    with pytest.raises(PipelineError, match=r"m\.pt: the weights do not fit a classifier"):
        load_classifier(path)
    payload["hparams"] = {"image_size": 32, "depth": 3}
    torch.save(payload, path)
    with pytest.raises(PipelineError, match=r"m\.pt: invalid classifier hyperparameters"):
        load_classifier(path)


def test_refuses_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.pt"
    save_model(Classifier(32, [4, 8]), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PipelineError, match=r"cut\.pt: not a readable model file"):
        load_classifier(path)


class _Evil:
    def __reduce__(self):  # noqa: ANN204 - would run a command if unpickled
        return (print, ("unpickled!",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_refuses_pickled_objects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"kind": "classifier", "hparams": {}, "state_dict": _Evil()}, path)
    with pytest.raises(PipelineError, match=r"evil\.pt: refused to load"):
        load_classifier(path)
    path2 = tmp_path / "plain.pkl"
    path2.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(PipelineError, match=r"plain\.pkl"):
        load_classifier(path2)
    assert "unpickled!" not in capsys.readouterr().out


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="not found"):
        load_autoencoder(tmp_path / "nothing.pt")
