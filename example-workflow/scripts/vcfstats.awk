# bcftools-stats-like counts from a VCF stream (stand-in for `bcftools stats`: the demo
# package set has no bcftools). Prints "sample<TAB>metric<TAB>value" lines.
BEGIN {
    OFS = "\t"
    ts["AG"] = ts["GA"] = ts["CT"] = ts["TC"] = 1
}
/^#/ { next }
{
    n++
    if (length($4) == 1 && length($5) == 1) {
        snv++
        if (($4 $5) in ts) transitions++; else transversions++
    } else {
        indel++
    }
    split($10, gt, ":")
    if (gt[1] == "1/1" || gt[1] == "1|1") hom++; else het++
}
END {
    print sample, "variants_total", n + 0
    print sample, "snvs", snv + 0
    print sample, "indels", indel + 0
    print sample, "transitions", transitions + 0
    print sample, "transversions", transversions + 0
    printf "%s\t%s\t%.3f\n", sample, "ts_tv", (transversions ? transitions / transversions : 0)
    print sample, "genotype_het", het + 0
    print sample, "genotype_hom_alt", hom + 0
}
