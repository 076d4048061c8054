"""Read a multi-label NIfTI, validate it, and map raw label values to class indices.

Class index convention used everywhere downstream: 0 is background, class ``c`` (0-based, in the
order of the config's label map) is stored as ``c + 1`` in the integer volume this module returns.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from vecset.atomic import write_bytes_atomic
from vecset.errors import CaseInputError, exclude_hint
from vecset.settings import MeshSettings

GZIP_MAGIC = b"\x1f\x8b"
# Least |det| of the affine's 3×3 part over the product of its column norms (1 = orthogonal axes): below it
# the grid is degenerate (flat meshes, wrong inside/outside).
MIN_AFFINE_SPREAD = 1e-3
# Relative disagreement allowed between header zooms and the affine's column norms (float32 headers).
ZOOM_RTOL = 1e-3


@dataclass(frozen=True)
class LabelImage:
    """A validated 3-D label volume on its image grid (voxel ijk → world RAS mm through ``affine``)."""

    labels: np.ndarray  # (I, J, K) integer raw values
    affine: np.ndarray  # (4, 4) float64
    path: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.labels.shape)  # type: ignore[return-value]

    @property
    def voxel_sizes(self) -> np.ndarray:
        """Voxel edge lengths in mm along i, j, k (column norms of the affine)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)


MAX_VOXELS = MeshSettings().max_voxels  # the largest label image read unless mesh.max_voxels says otherwise
HEADER_BYTES = 540  # a NIfTI-2 header; a NIfTI-1 header is the first 348 of them
READ_CHUNK = 1 << 24
# Bytes a file may hold past its header's image data (padding, a second gzip member's empty tail) before it is
# refused as not what its header says.
TRAILING_SLACK = 1 << 20


def read_header(path: str | Path) -> nib.Nifti1Header | None:
    """The NIfTI-1 or NIfTI-2 header at the start of ``path`` (gzipped or not), reading at most a few hundred
    bytes; None when there is none."""
    try:
        with gzip.open(path, "rb") if _is_gzip(Path(path)) else open(path, "rb") as fh:
            head = fh.read(HEADER_BYTES)
    except (OSError, EOFError, zlib.error):
        return None
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        if len(head) >= klass.sizeof_hdr:
            try:
                header = klass(head[: klass.sizeof_hdr], check=True)
            except Exception:
                continue
            if int(header["sizeof_hdr"]) == klass.sizeof_hdr:
                return header
    return None


def claimed_voxels(header: nib.Nifti1Header) -> int:
    """The number of voxels a header declares (every axis, trailing ones included)."""
    return math.prod(int(n) for n in header.get_data_shape())


def _image_end(header: nib.Nifti1Header) -> int:
    """Where the header says the image data ends: its offset plus voxels × bytes per voxel."""
    return int(header["vox_offset"]) + claimed_voxels(header) * header.get_data_dtype().itemsize


def _refuse_claim(header: nib.Nifti1Header, max_voxels: int | None, path: Path, case_id: str) -> None:
    voxels = claimed_voxels(header)
    if max_voxels is not None and voxels > max_voxels:
        raise CaseInputError(
            case_id, path,
            f"header claims {tuple(int(n) for n in header.get_data_shape())} = {voxels:,} voxels, more than "
            f"mesh.max_voxels ({max_voxels:,})",
            f"repair the header, or raise mesh.max_voxels if the image is that large {exclude_hint(case_id)}",
        )  # fmt: skip


class _PastLimit(Exception):
    """A file or gzip stream holds more than its header accounts for."""


def _inflate(compressed: bytes, limit: int) -> bytes:
    """Decompress a gzip file (every member) to its end, so CRC and length are checked, but never past ``limit``
    bytes: a stream that inflates further is refused without ever being held."""
    out, total, rest = [], 0, compressed
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        while not inflater.eof:
            piece = inflater.decompress(rest, READ_CHUNK)
            rest = inflater.unconsumed_tail
            total += len(piece)
            if total > limit:
                raise _PastLimit(limit)
            out.append(piece)
            if not piece and not rest:
                raise EOFError("compressed data ended before the end-of-stream marker")
        rest = inflater.unused_data.lstrip(b"\0")  # another member, or zero padding after the last
    return b"".join(out)


def _read_whole_file(path: Path, case_id: str, max_voxels: int | None = MAX_VOXELS) -> bytes:
    """The file's decompressed bytes, read only once its header's claim is within ``max_voxels``, and never more
    than that header accounts for; a gzip stream is read to its end so CRC and length are checked."""
    header = read_header(path)
    if header is not None:
        _refuse_claim(header, max_voxels, path, case_id)
    # Without a header, nothing past a header's length is read: the parse then says what the file is not.
    limit = _image_end(header) + TRAILING_SLACK if header is not None else HEADER_BYTES
    try:
        with open(path, "rb") as fh:
            compressed = fh.read(2) == GZIP_MAGIC
            fh.seek(0)
            raw = fh.read() if compressed else fh.read(limit + 1)
    except OSError as exc:
        raise CaseInputError(
            case_id, path, f"cannot read file ({exc.strerror})", "check the path and permissions"
        ) from exc
    try:
        if not raw.startswith(GZIP_MAGIC):
            if len(raw) > limit:
                raise _PastLimit(limit)
            return raw
        return _inflate(raw, limit)
    except _PastLimit:
        if header is None:
            return raw[:limit] if not raw.startswith(GZIP_MAGIC) else b""
        raise CaseInputError(
            case_id, path, f"{'gzip stream inflates' if raw.startswith(GZIP_MAGIC) else 'file runs'} past the "
            f"{limit:,} bytes its NIfTI header accounts for", f"copy or export the file again {exclude_hint(case_id)}",
        ) from None  # fmt: skip
    except EOFError as exc:
        raise CaseInputError(
            case_id,
            path,
            "truncated gzip stream (file ends before the compressed data does)",
            f"copy or export the file again {exclude_hint(case_id)}",
        ) from exc
    except (zlib.error, OSError) as exc:
        raise CaseInputError(
            case_id,
            path,
            f"corrupt gzip stream ({exc})",
            f"copy or export the file again {exclude_hint(case_id)}",
        ) from exc


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def _parse_nifti(data: bytes, path: Path, case_id: str) -> nib.Nifti1Image:
    for klass in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            return klass.from_bytes(data)
        except Exception:
            continue
    raise CaseInputError(
        case_id,
        path,
        "not a NIfTI-1/NIfTI-2 image (header not recognised)",
        f"convert the label map to NIfTI (.nii.gz) {exclude_hint(case_id)}",
    )


def _squeeze_to_3d(array: np.ndarray, path: Path, case_id: str) -> np.ndarray:
    shape = array.shape
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise CaseInputError(
            case_id,
            path,
            f"expected a 3-D label volume, got shape {shape}",
            f"save one 3-D volume per case {exclude_hint(case_id)}",
        )
    return array


def _check_layout(img: nib.Nifti1Image, path: Path, case_id: str) -> None:
    """Refuse, before reading any voxel, what is not one 3-D volume of plain numbers (2-D slices, RGB)."""
    shape = list(img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    if len(shape) != 3:
        raise CaseInputError(
            case_id, path, f"expected a 3-D label volume, got shape {tuple(img.shape)}",
            f"save one 3-D volume per case {exclude_hint(case_id)}",
        )  # fmt: skip
    dtype = img.get_data_dtype()
    if dtype.kind not in "biuf":
        raise CaseInputError(
            case_id, path, f"voxel type {dtype} is not a label type (RGB or complex data?)",
            f"save the segmentation with integer labels {exclude_hint(case_id)}",
        )  # fmt: skip


def _as_integer_labels(array: np.ndarray, path: Path, case_id: str) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer):
        return array
    if not np.all(np.isfinite(array)):
        raise CaseInputError(
            case_id,
            path,
            "float label volume contains NaN or inf",
            f"re-save the segmentation with integer labels {exclude_hint(case_id)}",
        )
    rounded = np.rint(array)
    off = array != rounded
    if np.any(off):
        examples = np.unique(array[off])[:3].tolist()
        raise CaseInputError(
            case_id,
            path,
            f"float label volume has non-integer values (e.g. {examples})",
            f"re-save the segmentation with integer labels (no resampling with interpolation) {exclude_hint(case_id)}",
        )
    return rounded.astype(np.int64)


def _check_zooms(img: nib.Nifti1Image, affine: np.ndarray, path: Path, case_id: str) -> None:
    header_zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    affine_zooms = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(affine_zooms <= 0) or not np.all(np.isfinite(affine)):
        raise CaseInputError(
            case_id,
            path,
            f"affine is singular or not finite: {affine[:3].tolist()}",
            f"repair the header's sform/qform {exclude_hint(case_id)}",
        )
    # Column norms can all be positive while the columns are (nearly) parallel: the volume the affine spans,
    # relative to a box with those edges, is the product of the angles' sines (1 for an orthogonal grid).
    spread = abs(np.linalg.det(affine[:3, :3])) / np.prod(affine_zooms)
    if spread < MIN_AFFINE_SPREAD:
        raise CaseInputError(
            case_id,
            path,
            f"affine is singular or nearly so (its axes span {spread:.2g} of an orthogonal grid's volume): "
            f"{np.round(affine[:3], 4).tolist()}",
            f"repair the header's sform/qform {exclude_hint(case_id)}",
        )
    if not np.allclose(header_zooms, affine_zooms, rtol=ZOOM_RTOL, atol=0):
        raise CaseInputError(
            case_id,
            path,
            f"header zooms {np.round(header_zooms, 4).tolist()} disagree with the affine's voxel sizes "
            f"{np.round(affine_zooms, 4).tolist()}",
            f"repair the header so pixdim and the sform/qform agree {exclude_hint(case_id)}",
        )


# Peak memory of a mesh job over the label volume's raw size (a float64 512×512×256 volume: 537 MB raw, 2.8 GB
# peak: the float array, its rounding and int64 copies, per-structure masks), plus the interpreter and libraries.
MESH_MEMORY_PER_RAW_BYTE = 5
MESH_MEMORY_BASE_MB = 1000
MESH_MEMORY_FLOOR_MB = 4000


def mesh_memory_mb(path: str | Path, max_voxels: int = MAX_VOXELS) -> int:
    """Memory to ask for a mesh job over the label image at ``path``, from its header alone (shape × voxel
    size; a few hundred bytes read); the floor when the header cannot be read or claims more than
    ``max_voxels`` (the job then names the problem), so one bad file raises no job's request."""
    header = read_header(path)
    if header is None or claimed_voxels(header) > max_voxels:
        return MESH_MEMORY_FLOOR_MB
    raw = claimed_voxels(header) * header.get_data_dtype().itemsize
    return max(MESH_MEMORY_FLOOR_MB, int(MESH_MEMORY_BASE_MB + MESH_MEMORY_PER_RAW_BYTE * raw / 1e6))


def read_label_image(path: str | Path, case_id: str, max_voxels: int | None = MAX_VOXELS) -> LabelImage:
    """Read and validate a label NIfTI; raise :class:`CaseInputError` with a one-line message if it is bad.

    Checks: a header claiming at most ``max_voxels`` (None: any; before any voxel is read), readable, complete gzip
    stream (CRC) that inflates to no more than the header accounts for, NIfTI header, 3-D (trailing
    singleton axes squeezed),
    integer-valued labels (whole-number floats accepted), zooms consistent with the affine. Oblique
    affines are accepted: all geometry downstream goes through the full affine.
    """
    path = Path(path)
    img = _parse_nifti(_read_whole_file(path, case_id, max_voxels), path, case_id)
    _check_layout(img, path, case_id)
    affine = np.asarray(img.affine, dtype=np.float64)
    _check_zooms(img, affine, path, case_id)
    try:
        array = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise CaseInputError(
            case_id,
            path,
            f"image data cannot be read ({exc})",
            f"copy or export the file again {exclude_hint(case_id)}",
        ) from exc
    array = _squeeze_to_3d(array, path, case_id)
    return LabelImage(labels=_as_integer_labels(array, path, case_id), affine=affine, path=str(path))


# Raw values in [0, DIRECT_LUT_MAX) are mapped by table lookups over chunks of LOOKUP_CHUNK voxels, with a bincount
# of each chunk for the values present: one pass, and no volume-sized int64 copy (on a fresh process's first
# 512x512x256 volume, that copy's page faults alone took 1.5 s). Other values (negative or huge) go by sorting.
DIRECT_LUT_MAX = 1 << 16
LOOKUP_CHUNK = 1 << 22


def _classes_and_present_values(raw: np.ndarray, mapping: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 volume of ``mapping[raw value]``, 0 for values not in it; the sorted raw values present)."""
    lo, hi = int(raw.min()), int(raw.max())
    if lo >= 0 and hi < DIRECT_LUT_MAX:
        table = np.zeros(hi + 1, dtype=np.uint8)
        for raw_value, c in mapping.items():
            if 0 <= raw_value <= hi:
                table[raw_value] = c
        flat = raw.reshape(-1)
        classes = np.empty(flat.shape, dtype=np.uint8)
        counts = np.zeros(hi + 1, dtype=np.int64)
        buffer = np.empty(min(LOOKUP_CHUNK, flat.size), dtype=np.intp)  # one allocation, reused by every chunk
        for first in range(0, flat.size, LOOKUP_CHUNK):
            part = buffer[: min(LOOKUP_CHUNK, flat.size - first)]
            part[:] = flat[first : first + len(part)]
            counts += np.bincount(part, minlength=hi + 1)
            np.take(table, part, out=classes[first : first + len(part)])
        return classes.reshape(raw.shape), np.flatnonzero(counts)
    keys = np.array(sorted(mapping), dtype=np.int64)
    pos = np.clip(np.searchsorted(keys, raw), 0, len(keys) - 1)
    values = np.array([mapping[k] for k in keys], dtype=np.uint8)
    classes = np.where(keys[pos] == raw, values[pos], 0).astype(np.uint8)
    return classes, np.unique(raw)


def _check_values_fit(dtype: np.dtype, label_map: dict[str, int], path: str, case_id: str) -> None:
    """Refuse a label map with values this image's voxel type cannot hold: those structures could never be found."""
    if not np.issubdtype(dtype, np.integer):
        return
    info = np.iinfo(dtype)
    impossible = {name: value for name, value in label_map.items() if not info.min <= value <= info.max}
    if impossible:
        raise CaseInputError(
            case_id,
            path,
            f"label values {impossible} cannot occur in this image's {dtype} voxels ({info.min}..{info.max})",
            f"set 'labels' in the workflow config to the raw voxel values of each structure {exclude_hint(case_id)}",
        )


def map_labels(image: LabelImage, label_map: dict[str, int], case_id: str, ignore_unknown: bool = False) -> np.ndarray:
    """Map raw values to class indices + 1 (uint8, 0 = background) in the order of ``label_map``.

    Raw values other than 0 that are not in ``label_map`` are refused, or mapped to background when
    ``ignore_unknown`` is true. A volume with no labelled voxel at all is refused.
    """
    raw = image.labels
    if len(label_map) > 254:
        raise ValueError(f"at most 254 classes are supported, got {len(label_map)}")
    _check_values_fit(raw.dtype, label_map, image.path, case_id)
    classes, values = _classes_and_present_values(
        raw, {raw_value: c + 1 for c, raw_value in enumerate(label_map.values())}
    )
    known = set(label_map.values()) | {0}
    unknown = sorted(int(v) for v in values if int(v) not in known)
    if unknown and not ignore_unknown:
        raise CaseInputError(
            case_id,
            image.path,
            f"label values {unknown} are not in the label map {sorted(known - {0})}",
            f"make 'labels' in the workflow config map this file's values {sorted(int(v) for v in values if v)} "
            f"(replace the map if it is another dataset's, or add the missing ones), set 'ignore_unknown_labels: "
            f"true' to treat them as background, {exclude_hint(case_id)}",
        )
    if not classes.any():
        raise CaseInputError(
            case_id,
            image.path,
            "mask is empty: no voxel carries a label of the label map",
            f"check that this is the right file and that 'labels' matches its values {exclude_hint(case_id)}",
        )
    return classes


def class_volume(raw: np.ndarray, values: list[int]) -> np.ndarray:
    """Raw label values → class index + 1 (uint8) in the order of ``values``; 0 for background and any value
    not listed. No checks: :func:`map_labels` is the checked version for inputs."""
    return _classes_and_present_values(raw, {value: c + 1 for c, value in enumerate(values)})[0]


def nifti_bytes(labels: np.ndarray, affine: np.ndarray) -> bytes:
    """A label map as gzip NIfTI-1 bytes: ``affine`` as sform and qform, millimetre units."""
    affine = np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(np.asarray(labels), affine)
    img.header.set_xyzt_units("mm")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=6)


def write_label_image(path: str | Path, labels: np.ndarray, affine: np.ndarray) -> None:
    """Write a label map as gzip NIfTI-1 (:func:`nifti_bytes`), atomically."""
    write_bytes_atomic(path, nifti_bytes(labels, affine))
