"""The command-line layer: each command's arguments, turned once into its typed settings
(`training/settings.py`), then handed to the library. Only this layer sees `argparse.Namespace`.

A command module defines `add_arguments(parser)` and `main(args)`. Building the parser imports
these modules only: the training code (and datasets, accelerate, transformers' Trainer) is
imported by `main` when the command runs, which keeps `mim-hub --help` cheap.
"""

# subcommand -> (module under mim_hub.commands, one-line help)
COMMANDS = {
    "pretrain": ("pretrain", "pre-train any method's *ForPreTraining model with Accelerate"),
    "finetune": ("finetune", "fine-tune a *ForImageClassification model with transformers' Trainer"),
    "eval": ("evaluate", "frozen-feature evaluation: kNN or linear probe"),
    "reconstruct": ("reconstruct", "picture of an image, its mask and the model's reconstruction"),
    "prepare-shards": ("prepare_shards", "write any --dataset source as webdataset tar shards of bounded image size"),
    "demo": ("demo", "offline end-to-end demo: pre-train, evaluate, fine-tune and reconstruct on digits"),
}
