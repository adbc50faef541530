"""One worker of a TF_CONFIG cluster training digits, for tests/test_multiworker.py.

``python tests/multiworker_driver.py OUT EPOCHS DUMP [--resume] [--precise-bn N]`` with ``TF_CONFIG`` set: runs
``edgecls.train.train`` (what ``edgecls train`` calls) and writes the final model's weights (the ones the
run saves as model.keras) to ``DUMP`` (.npz), so the test can compare the workers' weights although
only the chief keeps a run folder.
"""

from __future__ import annotations

import sys

import numpy as np


def main() -> None:
    out, epochs, dump = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    import edgecls.train as training
    import edgecls.train.stage as stage

    finish = stage.finish

    def dumping_finish(model, *args, **kwargs):
        np.savez(dump, *model.get_weights())
        return finish(model, *args, **kwargs)

    stage.finish = dumping_finish  # what train() calls to save the kept model
    precise_bn = int(sys.argv[sys.argv.index("--precise-bn") + 1]) if "--precise-bn" in sys.argv else None
    config = training.TrainConfig(
        data="digits",
        model="cnn",
        img_size=16,  # digits are 8x8 scans: 16 px loses nothing and a step costs about a quarter of 32 px's
        epochs=epochs,
        batch_size=32,
        patience=0,
        out=out,
        resume="--resume" in sys.argv,
        precise_bn=precise_bn,
    )
    result = training.train(config)
    print(f"val_accuracy {result.val_accuracy:.4f} run_dir {result.run_dir}", flush=True)


if __name__ == "__main__":
    main()
