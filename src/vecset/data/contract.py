"""The sample-file contract between preprocessing and training: its keys and its version.

One ``results/samples/{case}.npz`` per case (docs/workflow.md, "The sample file"). ``FORMAT_VERSION`` is a parameter
of the sample rule, so bumping it when a change alters the samples redoes them. Dependency-free: parsing
the Snakefile imports it.
"""

FORMAT_VERSION = 2  # 2: case_id and source, so a file copied over another case's is refused
CONTRACT_KEYS = (
    "surface_points",
    "surface_normals",
    "surface_labels",
    "vol_points",
    "vol_sdf",
    "near_points",
    "near_sdf",
    "present",
    "center",
    "scale",
    "affine",
    "shape",
    "class_names",
    "case_id",
    "source",
    "format_version",
)
