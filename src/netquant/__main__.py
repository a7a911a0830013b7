"""Command line: ``python -m netquant <command> ...`` (also installed as ``netquant``).

Commands:
  inspect FILE.nqz [--json]   section sizes, the paper's eq. (1) breakdown, compression ratio, entropy
  decode FILE.nqz OUT.pt      the decoded network as a plain PyTorch state_dict (torch.load-able)
  evaluate FILE.nqz --data-root DIR [--json]
                              rebuild the network the file holds, print its test accuracy and ratio
  compress --arch NAME [--weights FILE] (--images DIR | --dataset NAME --data-root DIR) --method M
           (--bits B | --k K | --step S | --lam L) --out FILE.nqz
                              compress your own model (torchvision:<name> or package.module:callable)
  reference --out reference/cpu --command "snakemake ..." [--results results] [--logs logs] [--force | --add | --add-rows]
                              keep a finished run's figures, tables and Table 1 files, with provenance
  readme README.md            generate the README's tables of reference results again from reference/
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

import torch

from netquant import compress, container, reference
from netquant.container import ContainerError
from netquant.io import atomic_path, write_text
from netquant.quantize.network import INCLUDE
from netquant.readme import refreshed_readme
from netquant.vocabulary import DATASET_SPLITS, METHODS


def _default(function, name: str):
    """The default of a parameter of the API function a command calls: one home for it."""
    return inspect.signature(function).parameters[name].default


def _inspect(args: argparse.Namespace) -> int:

    m = container.metrics(args.file)
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"{args.file}: netquant .nqz version {m['format_version']}, {m['file_bytes']:,} bytes "
          f"= {m['file_bits']:,} bits")
    made = m["description"].get("quantization")
    if made:
        rate = ", ".join(f"{key} {made[key]:.6g}" for key in ("k", "step", "lam") if key in made)
        print(f"quantized by {made['method']} ({rate}; scope {made['scope']}, {made['include']} quantized)")
    print(f"codes: labels {m['label_code']}, positions {m['index_code']}"
          + (f" (bound {m['index_bound']})" if m["index_code"] == "deep-compression" else ""))
    print(f"parameters N = {m['n_params']:,}: {m['n_quantized']:,} quantized (unpruned), {m['n_pruned']:,} pruned, "
          f"{m['n_passthrough_params']:,} unquantized; {m['n_buffer_elements']:,} buffer elements; "
          f"codebook sizes {m['codebook_sizes']}")
    _print_rows("sections (bytes, framing included)", m["section_bytes"], "{:>14,}", width=8)
    _print_rows("eq. (1) breakdown (bits)", m["eq1"], "{:>14,}")
    print(f"\ncompression ratio 32N / file bits = {m['ratio_file']:.2f}  "
          f"({m['bits_per_param']:.4f} bits per parameter)")
    print(f"compression ratio eq. (1)        = {m['ratio_eq1']:.2f}")
    if m["label_entropy_bits"] is not None:
        print(f"label entropy                    = {m['label_entropy_bits']:.4f} bits per quantized weight")
    _print_rows("average codeword length per quantized weight (bits)", m["bits_per_weight"], "{:>10.4f}")
    _print_rows("index bits per quantized weight", m["index_bits_per_kept"], "{:>10.4f}")
    return 0


def _print_rows(title: str, rows: dict, number: str, width: int = 20) -> None:
    print(f"\n{title}:")
    for key, value in rows.items():
        print(f"  {key:<{width}}" + number.format(value))


def _check_output(out: Path, *, inputs: list, folders: list = (), force: bool) -> None:
    """Before any work: ``out`` is a new path, or (with ``force``) an earlier output - never an input, a link
    to one, a path inside an input folder, or anything but a regular file."""
    for source in filter(None, inputs):
        if out.resolve() == Path(source).resolve() or (out.exists() and Path(source).exists()
                                                       and out.samefile(source)):
            raise ValueError(f"{out} is the input file itself ({source}); give a new path for the output")
    for folder in filter(None, folders):
        if Path(folder).resolve() in out.resolve().parents or out.resolve() == Path(folder).resolve():
            raise ValueError(f"{out} lies in the input folder {folder}; give a path outside it")
    if out.exists() or out.is_symlink():
        if not out.is_file():
            raise ValueError(f"{out} exists and is not a regular file (a folder, device, pipe or broken link); "
                             "give the path of a new file")
        if not force:
            raise ValueError(f"{out} exists; give a new path, or --force to replace it")


def _decode(args: argparse.Namespace) -> int:

    source = Path(args.file)
    if source.is_dir():
        raise ValueError(f"{source} is a folder; give a .nqz file")
    _check_output(Path(args.out), inputs=[source], force=args.force)
    state_dict = container.read_state_dict(args.file)
    with atomic_path(args.out) as tmp:
        torch.save(state_dict, tmp)
    print(f"wrote {args.out}: {len(state_dict)} entries")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    result = compress.evaluate_file(args.file, data_root=args.data_root, prepared=args.prepared,
                                    device=args.device, arch=args.arch)
    if args.json:
        print(json.dumps(result))
        return 0
    top5 = f", top-5 {result['top5']:.2f}%" if "top5" in result else ""
    print(f"{args.file}: {result['arch']} on {result['dataset']}: test accuracy {result['accuracy']:.2f}%{top5}, "
          f"compression ratio {result['ratio']:.2f} ({result['file_bytes']:,} bytes for "
          f"{result['n_params']:,} parameters)")
    return 0


def _compress(args: argparse.Namespace) -> int:
    _check_output(Path(args.out), inputs=[args.weights], folders=[args.images, args.data_root], force=args.force)
    result = compress.compress_command(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"wrote {result['file']}: {result['file_bytes']:,} bytes for {result['n_params']:,} parameters, "
          f"ratio {result['ratio']:.2f}; decoded test accuracy {result['accuracy']:.2f}%")
    return 0


def _reference(args: argparse.Namespace) -> int:
    config = {}
    if args.add and args.add_rows:
        raise ValueError("give --add or --add-rows, not both")
    if args.add or args.add_rows:
        import yaml

        configfile = Path(args.configfile or Path(args.run_folder) / "config" / "config.yaml")
        if not configfile.exists():
            raise FileNotFoundError(f"{configfile} not found: --add and --add-rows need the run's config "
                                    "(--configfile) for the figures' curves and the findings")
        config = yaml.safe_load(configfile.read_text())
    if args.add_rows:
        readme = reference.add_rows(args.results, args.out, command=args.run_command, logs=args.logs,
                                    run_folder=args.run_folder, figures=config.get("figures") or {},
                                    scale=config.get("scale", ""), note=args.note)
        print(f"added the rows of {args.results} to {readme.parent}/ (see {readme})")
        return 0
    readme = reference.collect(args.results, args.out, command=args.run_command, logs=args.logs,
                               run_folder=args.run_folder, replace=args.force, add=args.add,
                               figures=config.get("figures"), scale=config.get("scale", ""), note=args.note)
    print(f"wrote {readme.parent}/ (see {readme})")
    return 0


def _readme(args: argparse.Namespace) -> int:
    write_text(args.readme, refreshed_readme(args.readme))
    print(f"wrote {args.readme}: its reference tables generated again")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netquant", description="Network quantization towards the limit.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("inspect", help="what is inside a compressed .nqz file, bit by bit")
    p.add_argument("file", metavar="FILE.nqz")
    p.add_argument("--json", action="store_true", help="print the metrics dict as JSON")
    p.set_defaults(run=_inspect)

    p = commands.add_parser("decode", help="decode a .nqz file into a PyTorch state_dict file")
    p.add_argument("file", metavar="FILE.nqz")
    p.add_argument("out", metavar="OUT.pt")
    p.add_argument("--force", action="store_true", help="replace OUT.pt if it exists (never the input file)")
    p.set_defaults(run=_decode)

    p = commands.add_parser("evaluate", help="rebuild the network of a .nqz file; its test accuracy and ratio")
    p.add_argument("file", metavar="FILE.nqz")
    p.add_argument("--data-root", help="folder with the dataset in torchvision's layout (MNIST/raw, "
                   "cifar-10-batches-py) or the ImageNet folder")
    p.add_argument("--prepared", help="instead of --data-root: a prepared tensor file (resources/data/*.pt)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--arch", help="build this architecture (e.g. package.module:callable) instead of the one the "
                   "file names; a file itself may name only netquant's networks and torchvision:<model>")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_evaluate)

    p = commands.add_parser("compress", help="compress your own model into a .nqz file")
    p.add_argument("--arch", required=True, help="lenet5, resnet32, torchvision:<model> or package.module:callable")
    p.add_argument("--weights", help="a state_dict file (or a netquant checkpoint) to load into the model")
    p.add_argument("--num-classes", type=int, help="passed to the model's constructor")
    p.add_argument("--images", help="an image folder with train/<class>/* and val/<class>/*")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--dataset", choices=sorted(DATASET_SPLITS), help="instead of --images: a dataset read from --data-root")
    p.add_argument("--data-root")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--method", required=True, choices=METHODS)
    for rate, kind in (("bits", float), ("k", int), ("step", float), ("lam", float)):
        p.add_argument(f"--{rate}", type=kind, help="the rate: average codeword length (bits) or the method's own")
    p.add_argument("--importance", default="hessian", choices=["hessian", "adam", "none"])
    p.add_argument("--samples", type=int, default=_default(compress.importance, "samples"),
                   help="samples of the Hessian")
    p.add_argument("--scope", default="all", choices=["all", "layer"])
    p.add_argument("--include", default="weights", choices=INCLUDE)
    p.add_argument("--floor", type=float, help="instead of a rate: the largest ratio whose decoded file's test "
                   "accuracy (%%) is at least this (the probes' files go to OUT's folder, OUT.probes/)")
    p.add_argument("--max-probes", type=int, default=_default(compress.largest_ratio, "max_probes"),
                   help="with --floor: probes after the 1-6 bit grid")
    p.add_argument("--finetune-steps", type=int, default=_default(compress.largest_ratio, "finetune_steps"))
    p.add_argument("--lr", type=float, default=_default(compress.largest_ratio, "lr"),
                   help="fine-tuning learning rate of the shared values")
    p.add_argument("--out", required=True, metavar="FILE.nqz")
    p.add_argument("--force", action="store_true", help="replace FILE.nqz if it exists")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_compress)

    p = commands.add_parser("reference", help="keep a finished run's results in a reference folder")
    p.add_argument("--out", required=True, help="the reference folder, e.g. reference/cpu (replaced)")
    p.add_argument("--command", dest="run_command", required=True, help="the command that made the run, for the README")
    p.add_argument("--results", default="results")
    p.add_argument("--logs", default="logs")
    p.add_argument("--run-folder", default=".", help="the checkout the run used (for its commit)")
    p.add_argument("--force", action="store_true", help="replace the reference folder if it exists")
    p.add_argument("--add", action="store_true",
                   help="add this run's networks to an existing reference folder (the others' results stay)")
    p.add_argument("--add-rows", action="store_true",
                   help="add the Table 1 rows of a run that computed only some curves of networks already in the "
                        "folder, from the same pruned models (their rows and points replace those of the same name)")
    p.add_argument("--configfile", help="with --add or --add-rows: the run's config (default: "
                                        "RUN_FOLDER/config/config.yaml)")
    p.add_argument("--note", default="", help="a sentence for the run page (<network>/RUN.md)")
    p.set_defaults(run=_reference)

    p = commands.add_parser("readme", help="generate a README's reference tables again from their folders")
    p.add_argument("readme", help="a Markdown file with '<!-- reference: ... -->' blocks, e.g. README.md")
    p.set_defaults(run=_readme)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ContainerError, OSError, ValueError, RuntimeError) as exc:
        print(f"netquant {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
