import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from checkout_cam.images import read_image
from checkout_cam.preprocess import Preprocessor, crop_roi, roi_box

REFERENCE = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                       T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def test_matches_torchvision_recipe_on_real_photos(grocery_images):
    prep = Preprocessor()
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    for path in grocery_images:
        bgr = read_image(path)
        ref = REFERENCE(Image.fromarray(bgr[:, :, ::-1].copy()))
        ours = prep([bgr])[0]
        levels = ((ours - ref) * std * 255).abs()  # back to 0-255 levels
        assert ours.shape == (3, 224, 224)
        assert levels.mean() < 1.0, path
        assert levels.max() <= 1.0 + 1e-3, path


@pytest.mark.parametrize("shape", [(720, 1280), (480, 640), (464, 348), (100, 150)])
def test_any_frame_size_gives_one_crop(shape):
    img = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    out = Preprocessor()([img, img])
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.float32
    assert torch.equal(out[0], out[1])


def test_channel_order_is_rgb():
    blue = np.zeros((300, 300, 3), np.uint8)
    blue[..., 0] = 255  # BGR: pure blue
    out = Preprocessor(mean=(0, 0, 0), std=(1, 1, 1))([blue])[0]
    assert out[2].min() == pytest.approx(1.0) and out[0].max() == 0 and out[1].max() == 0


def test_roi_crops_the_scanning_area_first():
    img = np.zeros((100, 200, 3), np.uint8)
    img[50:, 100:] = 255
    assert roi_box(img.shape, None) == (0, 0, 200, 100)
    assert roi_box(img.shape, (0.5, 0.5, 0.5, 0.5)) == (100, 50, 100, 50)
    assert crop_roi(img, (0.5, 0.5, 0.5, 0.5)).min() == 255
    out = Preprocessor(roi=(0.5, 0.5, 0.5, 0.5), mean=(0, 0, 0), std=(1, 1, 1))([img])
    assert out.min() == pytest.approx(1.0)
