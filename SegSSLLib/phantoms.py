"""Synthetic data that ship with SegSSL: CT-like abdominal volumes and dermoscopy-like photographs.

Everything is generated from a seed, so the same call always gives the same arrays. Anatomy is
defined in normalised coordinates over the field of view, then sampled at voxel centres through a
smooth random deformation; the label map is drawn from the same shapes, so it is exact.

Coordinates follow DICOM/ITK LPS: +x towards the patient's left, +y posterior, +z superior, so the
liver lies at negative x and the spine at positive y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

PHANTOM_LABELS = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "vertebra", 6: "lesion"}
LABEL_VALUES = {name: value for value, name in PHANTOM_LABELS.items()}

# Portal-venous-phase CT numbers (HU) with a spread that varies between phantoms.
_TISSUE_HU = {
    "air": -1000.0,
    "fat": -100.0,
    "muscle": 50.0,
    "bowel": 10.0,
    "liver": 105.0,
    "spleen": 125.0,
    "kidney": 165.0,
    "aorta": 180.0,
    "bone": 450.0,
    "cortical_bone": 900.0,
    "lesion": 35.0,
}


@dataclass(frozen=True)
class Ellipsoid:
    center: tuple[float, float, float]  # normalised (x, y, z) in [-1, 1]
    radii: tuple[float, float, float]

    def inside(self, x, y, z) -> np.ndarray:
        cx, cy, cz = self.center
        rx, ry, rz = self.radii
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0


def oblique_direction(degrees_about_z: float = 20.0, degrees_about_x: float = 10.0) -> tuple[float, ...]:
    """A proper rotation matrix (row-major 9-tuple) for testing non-identity directions."""
    a, b = np.radians(degrees_about_z), np.radians(degrees_about_x)
    rot_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rot_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple((rot_z @ rot_x).ravel().tolist())


def make_ct_phantom(
    seed: int = 0,
    size: tuple[int, int, int] = (96, 96, 48),
    spacing: tuple[float, float, float] = (3.5, 3.5, 5.0),
    origin: tuple[float, float, float] | None = None,
    direction: tuple[float, ...] | None = None,
    lesions: int = 1,
    noise_hu: float = 12.0,
    deformation: float = 0.06,
) -> tuple[sitk.Image, sitk.Image]:
    """An abdominal CT-like volume in HU (int16) and its exact label map (uint8, ``PHANTOM_LABELS``).

    ``size`` and ``spacing`` are in ITK (i, j, k) order. ``deformation`` is the amplitude of the
    smooth random warp as a fraction of the half field of view; ``lesions`` hypodense spheres are put
    in the liver.
    """
    rng = np.random.default_rng(seed)
    nx, ny, nz = size
    # Normalised sample coordinates of voxel centres, in (k, j, i) array order.
    z, y, x = np.meshgrid(
        np.linspace(-1, 1, nz, dtype=np.float32) * (1 - 1 / nz),
        np.linspace(-1, 1, ny, dtype=np.float32) * (1 - 1 / ny),
        np.linspace(-1, 1, nx, dtype=np.float32) * (1 - 1 / nx),
        indexing="ij",
    )
    x, y, z = _smooth_warp(x, y, z, deformation, rng)

    def jitter(value, spread):
        return float(value + rng.uniform(-spread, spread))

    def organ(center, radii, spread=0.04, scale=0.1):
        c = tuple(jitter(v, spread) for v in center)
        r = tuple(v * (1 + rng.uniform(-scale, scale)) for v in radii)
        return Ellipsoid(c, r)

    hu = {name: jitter(value, 8.0) for name, value in _TISSUE_HU.items()}
    hu["air"] = _TISSUE_HU["air"]

    body = Ellipsoid((0.0, 0.0, 0.0), (jitter(0.88, 0.04), jitter(0.68, 0.04), 50.0))
    abdominal_wall = Ellipsoid((0.0, 0.0, 0.0), tuple(r * 0.86 for r in body.radii[:2]) + (50.0,))
    cavity = Ellipsoid((0.0, 0.02, 0.0), tuple(r * 0.78 for r in body.radii[:2]) + (50.0,))
    liver = organ((-0.36, -0.05, 0.3), (0.38, 0.42, 0.6))
    spleen = organ((0.5, 0.22, 0.35), (0.16, 0.24, 0.34))
    kidney_right = organ((-0.4, 0.34, -0.2), (0.14, 0.17, 0.32), spread=0.03)
    kidney_left = organ((0.4, 0.34, -0.15), (0.14, 0.17, 0.32), spread=0.03)
    aorta = Ellipsoid((jitter(0.06, 0.02), 0.22, 0.0), (0.06, 0.06, 50.0))
    vertebral_body = Ellipsoid((0.0, jitter(0.42, 0.02), 0.0), (0.11, 0.1, 50.0))
    spinous_process = Ellipsoid((0.0, vertebral_body.center[1] + 0.17, 0.0), (0.03, 0.08, 50.0))

    image = np.full(x.shape, hu["air"], dtype=np.float32)
    labels = np.zeros(x.shape, dtype=np.uint8)

    in_body = body.inside(x, y, z)
    image[in_body] = hu["fat"]
    image[abdominal_wall.inside(x, y, z) & in_body] = hu["muscle"]
    in_cavity = cavity.inside(x, y, z)
    # Bowel and mesenteric fat: a smooth random mixture inside the cavity.
    texture = ndimage.gaussian_filter(rng.standard_normal(x.shape).astype(np.float32), sigma=2.5)
    texture /= texture.std() + 1e-6
    image[in_cavity] = np.where(texture[in_cavity] > 0.3, hu["bowel"], hu["fat"])

    def paint(mask, tissue_hu, label=None):
        image[mask] = tissue_hu
        if label is not None:
            labels[mask] = label

    paint(liver.inside(x, y, z) & in_cavity, hu["liver"], LABEL_VALUES["liver"])
    paint(spleen.inside(x, y, z) & in_cavity, hu["spleen"], LABEL_VALUES["spleen"])
    paint(aorta.inside(x, y, z), hu["aorta"])
    paint(kidney_right.inside(x, y, z) & in_cavity, hu["kidney"], LABEL_VALUES["kidney_right"])
    paint(kidney_left.inside(x, y, z) & in_cavity, hu["kidney"], LABEL_VALUES["kidney_left"])
    vertebra = vertebral_body.inside(x, y, z) | spinous_process.inside(x, y, z)
    paint(vertebra, hu["cortical_bone"], LABEL_VALUES["vertebra"])
    inner_bone = Ellipsoid(vertebral_body.center, tuple(r * 0.75 for r in vertebral_body.radii))
    image[inner_bone.inside(x, y, z)] = hu["bone"]

    for _ in range(lesions):
        center = _point_inside(labels == LABEL_VALUES["liver"], x, y, z, rng, margin_voxels=3)
        if center is None:
            break
        radius = rng.uniform(0.05, 0.09)
        lesion = Ellipsoid(center, (radius, radius, radius * 1.3)).inside(x, y, z)
        paint(lesion & (labels == LABEL_VALUES["liver"]), hu["lesion"], LABEL_VALUES["lesion"])

    # Partial-volume blur, then correlated scanner noise.
    image = ndimage.gaussian_filter(image, sigma=0.6)
    noise = ndimage.gaussian_filter(rng.standard_normal(image.shape).astype(np.float32), sigma=0.7)
    image += noise * (noise_hu / (noise.std() + 1e-6))
    image = np.clip(np.round(image), -1024, 3071).astype(np.int16)

    spacing = tuple(float(s) for s in spacing)
    if origin is None:
        # Centre the field of view on (0, 0, 0) as scanners roughly do.
        direction_matrix = np.array(direction or np.eye(3).ravel()).reshape(3, 3)
        half_extent = (np.array(size) - 1) * np.array(spacing) / 2
        origin = tuple((-direction_matrix @ half_extent).tolist())
    return (
        _to_image(image, spacing, origin, direction),
        _to_image(labels, spacing, origin, direction),
    )


def _smooth_warp(x, y, z, amplitude: float, rng: np.random.Generator):
    """Displace sample coordinates by a sum of low-frequency sinusoids (same warp for image and labels)."""
    if amplitude <= 0:
        return x, y, z
    warped = []
    for coordinate in (x, y, z):
        displacement = np.zeros_like(coordinate)
        for _ in range(3):
            fx, fy, fz = rng.uniform(0.3, 1.2, size=3)
            phase = rng.uniform(0, 2 * np.pi)
            displacement += np.sin(np.pi * (fx * x + fy * y + fz * z) + phase).astype(np.float32)
        warped.append(coordinate + amplitude / 3 * displacement)
    return tuple(warped)


def _point_inside(mask, x, y, z, rng, margin_voxels: int):
    core = ndimage.binary_erosion(mask, iterations=margin_voxels)
    candidates = np.flatnonzero(core)
    if candidates.size == 0:
        return None
    pick = candidates[rng.integers(candidates.size)]
    return float(x.flat[pick]), float(y.flat[pick]), float(z.flat[pick])


def _to_image(array, spacing, origin, direction) -> sitk.Image:
    image = sitk.GetImageFromArray(array, isVector=array.ndim == 3 and array.shape[-1] == 3 and len(spacing) == 2)
    image.SetSpacing(spacing)
    image.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        image.SetDirection(tuple(float(d) for d in direction))
    return image


def make_dermoscopy_phantom(seed: int = 0, size: tuple[int, int] = (192, 192)) -> tuple[sitk.Image, sitk.Image]:
    """A dermoscopy-like RGB photograph (uint8, 3 components) with one pigmented lesion and its mask.

    ``size`` is (width, height). The lesion has an irregular border, darker centre and colour
    variegation; hairs and the dark corners of the dermatoscope's round field are not lesion.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    v = (rows - height / 2) / (height / 2)
    u = (cols - width / 2) / (width / 2)

    skin = np.array([214, 168, 140], np.float32) + rng.uniform(-15, 15, 3)
    lighting = 1.0 + 0.08 * (rng.uniform(-1, 1) * u + rng.uniform(-1, 1) * v)
    grain = ndimage.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 1.5)
    image = skin[None, None, :] * lighting[..., None] + 6.0 * grain[..., None]

    # Lesion: a star-shaped region r < r(theta) with a few random harmonics, off-centre a little.
    cu, cv = rng.uniform(-0.15, 0.15, 2)
    radius = rng.uniform(0.3, 0.45)
    theta = np.arctan2(v - cv, u - cu)
    border = np.ones_like(theta)
    for harmonic in range(2, 7):
        border += rng.uniform(0.0, 0.12 / harmonic * 2) * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
    distance = np.hypot(u - cu, v - cv) / (radius * border)
    mask = distance <= 1.0

    brown = np.array([120, 75, 50], np.float32) + rng.uniform(-15, 15, 3)
    dark = np.array([60, 35, 30], np.float32)
    variegation = ndimage.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), 4)
    variegation = (variegation - variegation.min()) / (np.ptp(variegation) + 1e-6)
    core_weight = np.clip(1.2 - distance, 0, 1)[..., None] * (0.5 + 0.5 * variegation[..., None])
    lesion_colour = brown * (1 - core_weight) + dark * core_weight
    # Soft edge over about two pixels so the border is not a perfect step.
    alpha = np.clip((1.0 - distance) * radius * min(width, height) / 4 + 0.5, 0, 1)[..., None]
    image = image * (1 - alpha) + lesion_colour * alpha

    for _ in range(rng.integers(2, 5)):
        _draw_hair(image, rng, width, height)

    vignette = np.clip(1.25 - 0.45 * np.hypot(u, v) ** 3, 0.05, 1.0)
    image = np.clip(image * vignette[..., None] + rng.normal(0, 2.0, image.shape), 0, 255).astype(np.uint8)

    photo = sitk.GetImageFromArray(image, isVector=True)
    label = sitk.GetImageFromArray(mask.astype(np.uint8))
    return photo, label


def _draw_hair(image: np.ndarray, rng: np.random.Generator, width: int, height: int) -> None:
    """A dark, slightly curved line across the picture (hair is not part of the lesion)."""
    start = rng.uniform([0, 0], [width, height])
    angle = rng.uniform(0, np.pi)
    bend = rng.uniform(-0.004, 0.004)
    for step in range(int(1.5 * max(width, height))):
        angle += bend
        px = int(start[0] + step * np.cos(angle))
        py = int(start[1] + step * np.sin(angle))
        if 0 <= px < width and 0 <= py < height:
            image[py, px] = image[py, px] * 0.35
