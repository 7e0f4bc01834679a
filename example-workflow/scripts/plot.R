# Plot the variant summary with ggplot2.
# usage: Rscript plot.R SUMMARY_TSV OUT_PDF
suppressPackageStartupMessages(library(ggplot2))
args <- commandArgs(trailingOnly = TRUE)
summary <- read.delim(args[1], check.names = FALSE)
long <- rbind(
  data.frame(sample = summary$sample, kind = "SNVs", n = summary$snvs),
  data.frame(sample = summary$sample, kind = "indels", n = summary$indels)
)
p <- ggplot(long, aes(x = sample, y = n, fill = kind)) +
  geom_col(position = "dodge") +
  labs(title = "Simulated variants per sample", y = "variants", x = NULL) +
  theme_minimal()
ggsave(args[2], p, width = 5, height = 4)
cat("wrote", args[2], "\n")
