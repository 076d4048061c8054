#!/usr/bin/env bash
# Snakemake runs this once, inside the new conda environment of envs/vecset.yaml (--sdm conda): install this
# project's package there, editable, from the checkout whose Snakefile is running (rules/common.smk exports
# VECSET_SOURCE). The environment's packages come from vecset.yaml, so nothing else is installed.
set -euo pipefail
python -m pip install --no-deps --editable "${VECSET_SOURCE:?set by rules/common.smk when the Snakefile is parsed}"
