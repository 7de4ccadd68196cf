import torch

from checkout_cam.training.augment import AugmentConfig, TrainAugment, normalizer

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IDENTITY = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), rotate_deg=0.0, hflip=False,
                         brightness=0.0, contrast=0.0, saturation=0.0)


def _batch(n=4, size=24):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_identity_settings_return_the_normalized_image():
    x = _batch()
    out = TrainAugment(24, MEAN, STD, IDENTITY)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out, normalizer(MEAN, STD)(x), atol=1e-5)


def test_flip_only_mirrors_left_right():
    x = _batch(n=64)
    aug = TrainAugment(24, MEAN, STD, AugmentConfig(**{**IDENTITY.__dict__, "hflip": True}))
    out = aug(x, torch.Generator().manual_seed(0))
    ref = normalizer(MEAN, STD)(x)
    same = torch.isclose(out, ref, atol=1e-5).flatten(1).all(1)
    mirrored = torch.isclose(out, ref.flip(-1), atol=1e-5).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54   # about half, never upside down


def test_default_augment_is_seeded_and_shaped_for_training():
    x = _batch(size=40)
    aug = TrainAugment(32, MEAN, STD)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert a.shape == (4, 3, 32, 32) and a.dtype == torch.float32
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert aug.geometry(256, torch.Generator().manual_seed(0))[:, :, :2].abs().max() <= 1.0 + 1e-6
