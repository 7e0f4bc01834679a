# samtools-flagstat-like counts from a SAM stream (stand-in for `samtools flagstat`:
# the demo package set has no samtools). Prints "sample<TAB>metric<TAB>value" lines.
BEGIN { OFS = "\t" }
/^@/ { next }
{
    total++
    flag = $2
    if (int(flag / 4) % 2 == 1) { unmapped++; next }
    mapped++
    if (int(flag / 1024) % 2 == 1) dup++
    if (int(flag / 16) % 2 == 1) rev++
    if ($5 >= 30) q30++
    mapq_sum += $5
}
END {
    print sample, "reads_total", total + 0
    print sample, "reads_mapped", mapped + 0
    print sample, "reads_unmapped", unmapped + 0
    print sample, "reads_duplicate", dup + 0
    print sample, "reads_reverse", rev + 0
    print sample, "reads_mapq30", q30 + 0
    printf "%s\t%s\t%.2f\n", sample, "mapq_mean", (mapped ? mapq_sum / mapped : 0)
}
