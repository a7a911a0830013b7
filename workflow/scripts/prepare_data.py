from netquant import data, steps

synthetic = snakemake.params.synthetic or {"train": 0, "test": 0, "seed": 0}
steps.setup(snakemake.threads, synthetic["seed"], snakemake.log[0])
splits = data.prepare(snakemake.wildcards.dataset, snakemake.params.data_root, download=snakemake.config["download"],
                      synthetic_sizes=(synthetic["train"], synthetic["test"]), seed=synthetic["seed"])
data.save_prepared(snakemake.output[0], splits)
