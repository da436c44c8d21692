"""Distributed data parallel in the entrypoint, switched on by SageMaker's SM_HOSTS / SM_NUM_GPUS."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sagemaker_support import free_port

from streamguard_ml import layout
from streamguard_ml.distributed import Topology, launch, torchrun_command


def test_topology_and_launch_plan_follow_sagemakers_environment():
    env = {"SM_HOSTS": json.dumps(["algo-2", "algo-1"]), "SM_CURRENT_HOST": "algo-2", "SM_NUM_GPUS": "4"}
    topo = Topology.from_env(env)
    assert (topo.world_size, topo.node_rank, topo.procs_per_host) == (8, 1, 4)
    cmd = torchrun_command(topo, ["--model-type", "gnn"], env)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert {"--nnodes=2", "--nproc-per-node=4", "--node-rank=1", "--master-addr=algo-1", "--master-port=29500"} <= set(cmd)
    assert cmd[-4:] == ["-m", "streamguard_ml.train", "--model-type", "gnn"]

    single = {"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1", "SM_NUM_GPUS": "1"}
    assert launch([], dict(single)) is None and "RANK" not in single  # one process: nothing to do
    two_hosts = {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2", "SM_NUM_GPUS": "0"}
    assert launch([], two_hosts) is None  # one process per host: this process becomes its rank
    assert (two_hosts["RANK"], two_hosts["WORLD_SIZE"], two_hosts["MASTER_ADDR"]) == ("1", "2", "algo-1")
    with pytest.raises(SystemExit, match="algo-3"):
        Topology.from_env({"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-3"})


@pytest.mark.slow
def test_two_hosts_train_one_model_with_ddp_over_gloo(processed_run, tmp_path):
    """Two "hosts" (processes) on CPU: gradients are averaged, so both end with identical weights,
    and only rank 0 prints epoch lines and writes the model."""
    store, run, _, _ = processed_run
    port = str(free_port())
    procs = []
    for host in ("algo-1", "algo-2"):
        root = tmp_path / host / "opt" / "ml"
        store.download_dir(layout.split_dir(run, "train"), root / "input/data/train")
        store.download_dir(layout.split_dir(run, "val"), root / "input/data/validation")
        env = {**os.environ, "SM_MODEL_DIR": str(root / "model"), "SM_CHANNEL_TRAIN": str(root / "input/data/train"),
               "SM_CHANNEL_VALIDATION": str(root / "input/data/validation"), "SM_NUM_GPUS": "0",
               "SM_HOSTS": json.dumps(["algo-1", "algo-2"]), "SM_CURRENT_HOST": host,
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "streamguard_ml.train", "--model-type", "gnn", "--epochs", "2", "--hidden", "16",
               "--layers", "1", "--heads", "2", "--batch-size", "32", "--patience", "9"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    checksums = [re.search(r"rank (\d)/2 done: parameter checksum (\S+)", o) for o in outs]
    assert [m.group(1) for m in checksums] == ["0", "1"]
    assert checksums[0].group(2) == checksums[1].group(2)  # DDP kept the replicas identical
    assert len([line for line in outs[0].splitlines() if line.startswith("Epoch ")]) == 2
    assert not [line for line in outs[1].splitlines() if line.startswith("Epoch ")]
    assert (tmp_path / "algo-1/opt/ml/model/model.safetensors").exists()
    assert not list(Path(tmp_path / "algo-2/opt/ml/model").glob("*"))
    train_samples = json.loads((tmp_path / "algo-1/opt/ml/model/training.json").read_text())["train_samples"]
    assert "joined (gloo on cpu)" in outs[1] and train_samples > 0
