from netquant import data, steps

steps.setup(snakemake.threads, snakemake.params.seed, snakemake.log[0])
synthetic = snakemake.params.synthetic or {"train": 0, "test": 0}
splits = data.prepare(snakemake.wildcards.dataset, snakemake.params.data_root, download=snakemake.config["download"],
                      synthetic_sizes=(synthetic["train"], synthetic["test"]), seed=snakemake.params.seed)
data.save_prepared(snakemake.output[0], splits)
