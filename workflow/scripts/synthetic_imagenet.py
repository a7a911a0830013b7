from netquant import data, steps

steps.setup(snakemake.threads, snakemake.params.seed, snakemake.log[0])
data.make_synthetic_imagenet(snakemake.output[0], seed=snakemake.params.seed)
