"""Combine the per-sample counts into one table (samples x metrics) with pandas.

usage: summarize.py OUT_TSV COUNTS_TSV...
"""

import sys

import pandas as pd

out, inputs = sys.argv[1], sys.argv[2:]
long = pd.concat(
    [pd.read_csv(p, sep="\t", names=["sample", "metric", "value"]) for p in inputs],
    ignore_index=True,
)
wide = long.pivot(index="sample", columns="metric", values="value")
# counts back to integers (the long table mixes counts and ratios)
for col in wide.columns:
    if (wide[col] % 1 == 0).all():
        wide[col] = wide[col].astype("int64")
wide["mapped_pct"] = (100 * wide["reads_mapped"] / wide["reads_total"]).round(2)
wide["duplicate_pct"] = (100 * wide["reads_duplicate"] / wide["reads_mapped"]).round(2)
wide = wide[sorted(wide.columns)]
wide.to_csv(out, sep="\t")
print(wide.T.to_string())
print(f"pandas {pd.__version__}")
