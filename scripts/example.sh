#!/usr/bin/env bash
# The "main job": run the example workflow (example-workflow/) on embedded defaults.
#
#   bash scripts/example.sh [extra snakemake arguments...]
#
# 1. installs what nixsnake needs (scripts/setup.sh: Debian packages + this package);
# 2. makes the example's conda channel on disk (example-workflow/scripts/conda_channel.py)
#    and checks the example's committed locks (`nixsnake lock --check`: they name commits of
#    the embedded demo package set, which are the same on every machine);
# 3. builds their images into the workflow-local store (.snakemake/nixsnake-store), with
#    progress -- Snakemake would otherwise build them silently while parsing the Snakefile;
# 4. runs the workflow locally with released Snakemake through the `container:` path
#    (`snakemake --sdm apptainer --cores 2`); without a real apptainer/singularity on PATH
#    it uses the TEST STAND-IN tests/standin/apptainer (squashfuse + bubblewrap);
# 5. prints where the results are, the summary, the annotation summary (consequence
#    counts per sample) and where the plot is.
# Works from a clean clone on a fresh Debian 12 machine (as root, for apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
wf=$repo/example-workflow
say() { printf '\n== example: %s\n' "$*"; }

say "setting up (scripts/setup.sh)"
bash scripts/setup.sh

cd "$wf"
# the env files of a default run: the VEP ones serve the `vep` rule, which is off unless
# --config vep_cache=PATH is given (envs/vep.toml needs a real nixpkgs, envs/vep-bioconda.toml
# the bioconda channel; docs/vep.md)
envs=()
for f in envs/*.toml; do
    case $f in *.lock.toml | envs/vep.toml | envs/vep-bioconda.toml) ;; *) envs+=("$f") ;; esac
done

# envs/tally.toml's [conda] packages come from the example's own conda channel, a file://
# channel made on disk (byte for byte the same everywhere, so the committed lock fits)
say "making the example's conda channel (scripts/conda_channel.py)"
python3 scripts/conda_channel.py

say "checking the committed locks of ${#envs[@]} env files"
python3 -m snakemake_deploy_nixsnake.cli lock --check "${envs[@]}"

say "building images (store: $wf/.snakemake/nixsnake-store)"
start=$(date +%s)
python3 -m snakemake_deploy_nixsnake.cli build "${envs[@]}"
echo "images ready in $(( $(date +%s) - start ))s"

if command -v apptainer >/dev/null 2>&1 || command -v singularity >/dev/null 2>&1; then
    say "using $(command -v apptainer || command -v singularity)"
else
    export PATH="$repo/tests/standin:$PATH"
    say "NOTE: no apptainer or singularity on PATH. Using the TEST STAND-IN
   $repo/tests/standin/apptainer: it is NOT apptainer; it accepts apptainer's command
   line and runs the images with squashfuse + bubblewrap. Install apptainer for real use."
fi

say "running the workflow: snakemake --sdm apptainer --cores 2 $*"
start=$(date +%s)
python3 -m snakemake --sdm apptainer --cores 2 "$@"
echo "workflow finished in $(( $(date +%s) - start ))s"

say "results (in $wf)"
cat <<EOF
  results/summary.tsv                 samples x metrics: reads, depth, calls, Ts/Tv, recall (pandas)
  results/consequences.tsv            consequence x sample counts (bcftools csq, pandas)
  results/tally/consequence-counts.tsv  variants per consequence (csq-tally, a conda package)
  results/plot/consequences.pdf       consequences per sample; calls vs simulated (R, ggplot2)
  results/cohort/cohort.csq.vcf.gz    the cohort's calls with consequences (BCSQ), gathered from
                                      results/annotated/<chunk>.vcf.gz
  results/qc/                         samtools flagstat/stats, bcftools stats per sample
  results/bam/, results/calls/        sorted+indexed BAMs, bgzipped+tabixed VCFs per sample
  results/ref/                        the simulated genome (FASTA + .fai) and genes (GFF3)
  results/gpu/gpu_check.txt           GPU / driver report
  results/proof/*.txt                 evidence that each job ran inside its image
  logs/                               the steps' logs
EOF
echo
echo "summary ($wf/results/summary.tsv):"
column -t -s $'\t' results/summary.tsv 2>/dev/null || cat results/summary.tsv
echo
echo "annotation: variants per consequence and sample, bcftools csq over $(ls results/annotated/*.vcf.gz | wc -l) chunks ($wf/results/consequences.tsv):"
column -t -s $'\t' results/consequences.tsv 2>/dev/null || cat results/consequences.tsv
echo
echo "conda layer: csq-tally from the example's conda channel ($wf/results/tally/consequence-counts.tsv):"
head -n 1 results/tally/consequence-counts.tsv
echo
echo "plot: $wf/results/plot/consequences.pdf ($(tail -n 1 results/plot/Rscript-output.txt))"
echo
echo "where each job ran (results/proof/):"
for p in results/proof/*.txt; do
    printf '  %-24s %s %s %s\n' "$(basename "$p" .txt)" \
        "$(grep -m1 '^which_' "$p")" "$(grep '^metadata=' "$p")" "$(grep '^host_python=' "$p")"
done
echo
echo "GPU check: $(grep '^verdict=' results/gpu/gpu_check.txt | cut -d= -f2-)"
