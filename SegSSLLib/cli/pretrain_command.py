"""``segssl pretrain``: PolyCL contrastive pretraining of the U-Net encoder (no pixel labels needed)."""

from __future__ import annotations

import logging

from SegSSLLib.cli.common import add_device_option, add_random_seed_option
from SegSSLLib.cli.polycl_options import add_network_options, add_training_options, check_before_training, network_settings, train

HELP = "PolyCL contrastive pretraining on unlabelled (or slice-flagged) volumes; multi-GPU with torchrun"

log = logging.getLogger(__name__)


def configure(parser) -> None:
    parser.add_argument("--data", nargs="+", required=True, metavar="DIR", help="MSD folders or folders of volumes")
    parser.add_argument("--out", required=True, metavar="CKPT", help="pretrained encoder file to write (.pt), updated every epoch")
    parser.add_argument(
        "--strategy", choices=("S", "O", "M"), default="S",
        help="example selection: S same scan (default), O organ present/absent, M both (O and M need --label)",
    )
    parser.add_argument("--label", type=int, default=None, metavar="N", help="label value whose presence flags slices (O, M)")
    parser.add_argument("--epochs", type=int, metavar="N", default=10, help="epochs (default: 10)")
    parser.add_argument("--batch-size", type=int, metavar="N", default=16, help="triplets per step and process (default: 16)")
    parser.add_argument("--temperature", type=float, default=0.1, help="InfoNCE temperature (default: 0.1)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out from its last epoch")
    add_network_options(parser)
    add_training_options(parser)
    add_device_option(parser)
    add_random_seed_option(parser)


def run(args, progress) -> int:
    check_before_training(args, args.data, tuple(args.data))

    from SegSSLLib.polycl.pretraining import PretrainOptions
    from SegSSLLib.polycl.workflows import pretrain

    model_config, slicing = network_settings(args)
    options = PretrainOptions(
        strategy=args.strategy, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        temperature=args.temperature, seed=args.random_seed, label=args.label, workers=args.workers,
    )
    history = train(args, progress, model_config, slicing, pretrain, args.data, args.out, options)
    if history is not None:
        log.info("wrote %s (epoch %d, loss %.4f)", args.out, history[-1]["epoch"], history[-1]["loss"])
        progress.output(args.out)
    return 0
