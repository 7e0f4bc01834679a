# Plot the cohort with ggplot2: page 1, consequences per sample (bcftools csq); page 2,
# called vs simulated variants per sample.
# usage: Rscript plot.R CONSEQUENCES_TSV SUMMARY_TSV OUT_PDF
suppressPackageStartupMessages(library(ggplot2))
args <- commandArgs(trailingOnly = TRUE)
wide <- read.delim(args[1], check.names = FALSE)
summary <- read.delim(args[2], check.names = FALSE)
samples <- setdiff(colnames(wide), c("consequence", "total"))
long <- data.frame(
  consequence = factor(rep(wide$consequence, times = length(samples)), levels = rev(wide$consequence)),
  sample = rep(samples, each = nrow(wide)),
  variants = unlist(wide[samples], use.names = FALSE)
)
p1 <- ggplot(long, aes(x = consequence, y = variants, fill = sample)) +
  geom_col(position = "dodge") +
  coord_flip() +
  labs(title = "Predicted consequences per sample (bcftools csq)", x = NULL, y = "variants") +
  theme_minimal()
calls <- rbind(
  data.frame(sample = summary$sample, kind = "called SNVs", n = summary$snvs),
  data.frame(sample = summary$sample, kind = "called indels", n = summary$indels),
  data.frame(sample = summary$sample, kind = "simulated (truth)", n = summary$variants_true)
)
p2 <- ggplot(calls, aes(x = sample, y = n, fill = kind)) +
  geom_col(position = "dodge") +
  labs(title = "Variants per sample: bcftools call vs the simulation", x = NULL, y = "variants") +
  theme_minimal()
pdf(args[3], width = 7, height = 5)
print(p1)
print(p2)
invisible(dev.off())
cat("wrote", args[3], "with", nrow(wide), "consequence types for", length(samples), "samples\n")
