"""The deployment wrappers without starting anything: the commands they would run, the Flower
configuration they write, the certificates they make, and their one-line errors."""

from __future__ import annotations

import tomllib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from flwr.common.config import parse_config_args

from clients.errors import InputError
from fleet.deploy import make_certs
from fleet.cli import main
from fleet.deploy.coordinator import Coordinator, connection_entry, superlink_command, write_connection
from fleet.deploy.device import Device, node_config, supernode_command
from fleet.deploy.flower import CONNECTION

pytestmark = pytest.mark.deployment


def test_the_superlink_is_secured_unless_asked_not_to_be(tmp_path):
    secure = superlink_command(Coordinator(certs=tmp_path, home=tmp_path / "h"))
    assert "--enable-supernode-auth" in secure and "--insecure" not in secure
    assert secure[secure.index("--ssl-certfile") + 1] == str(tmp_path / "server.crt")
    assert "--disable-runtime-dependency-installation" in secure  # never pulls a CUDA torch
    assert secure[secure.index("--host") + 1] == "127.0.0.1"
    insecure = superlink_command(Coordinator(insecure=True, home=tmp_path))
    assert "--insecure" in insecure and "--enable-supernode-auth" not in insecure


def test_node_config_survives_flowers_own_parser(tmp_path):
    d = Device(superlink="127.0.0.1:9092", device_id=3, devices=8, state_dir=tmp_path / "my state",
               data_dir=tmp_path / "data", profile="rpi4", real=True)
    parsed = parse_config_args([node_config(d)])
    assert parsed == {"partition-id": 3, "num-partitions": 8, "state-dir": str(tmp_path / "my state"),
                      "real": True, "data-dir": str(tmp_path / "data"), "profile": "rpi4"}
    argv = supernode_command(Device(superlink="10.0.0.2:9092", device_id=0, devices=2, state_dir=tmp_path,
                                    ca=tmp_path / "ca.crt", key=tmp_path / "node-0.key"))
    assert argv[argv.index("--auth-supernode-private-key") + 1] == str(tmp_path / "node-0.key")
    assert argv[argv.index("--host") + 1] == "127.0.0.1"  # its local API stays on loopback


def test_the_connection_is_added_without_losing_the_users_own(tmp_path):
    (tmp_path / "config.toml").write_text('[superlink]\ndefault = "mine"\n\n[superlink.mine]\naddress = "x:1"\n')
    entry = connection_entry(Coordinator(host="0.0.0.0", port=9100, certs=tmp_path))
    assert entry == {"address": "127.0.0.1:9100", "root-certificates": str(tmp_path / "ca.crt")}
    write_connection(entry, tmp_path)
    config = tomllib.loads((tmp_path / "config.toml").read_text())
    assert config["superlink"]["default"] == "mine" and config["superlink"]["mine"] == {"address": "x:1"}
    assert config["superlink"][CONNECTION] == entry


def test_certificates_name_the_coordinator_and_keys_are_what_flower_loads(tmp_path):
    make_certs(tmp_path, ["192.168.1.10", "coordinator.lan"], 2)
    cert = x509.load_pem_x509_certificate((tmp_path / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1", "192.168.1.10"}
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "coordinator.lan"}
    key = load_ssh_private_key((tmp_path / "node-1.key").read_bytes(), password=None)
    assert key.curve.name == "secp384r1"
    assert load_ssh_public_key((tmp_path / "node-1.pub").read_bytes()).public_numbers() == \
        key.public_key().public_numbers()
    assert (tmp_path / "node-1.key").stat().st_mode & 0o077 == 0  # private keys are the owner's only
    with pytest.raises(InputError, match="already exists"):
        make_certs(tmp_path, [], 1)


@pytest.mark.parametrize("argv, message", [
    (["certs", "{out}", "--host", "bad host"], "neither an IP address nor a host name"),
    (["coordinator", "--home", "{out}"], "--certs is required"),
    (["device", "--superlink", "nowhere", "--device-id", "0", "--devices", "2", "--state-dir", "{out}"],
     "--superlink must be HOST:PORT"),
    (["device", "--superlink", "127.0.0.1:9", "--device-id", "0", "--devices", "2", "--state-dir", "{out}"],
     "--ca and --key are required"),
    (["device", "--superlink", "127.0.0.1:9", "--device-id", "2", "--devices", "2", "--state-dir", "{out}",
      "--insecure"], "--device-id must be in [0, 2)"),
    (["submit", "{out}/missing.yaml"], "missing.yaml"),
])
def test_bad_input_is_one_line_and_exit_2_before_anything_starts(tmp_path, capsys, argv, message):
    code = main([a.replace("{out}", str(tmp_path / "x")) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") <= 2, err  # an --insecure warning may precede it
    assert not (tmp_path / "x" / "superlink.db").exists()


def test_fleet_state_describes_each_devices_newest_state_under_run_folders(tmp_path, capsys):
    from clients import state_store
    from clients.sparcl.config import LearnerConfig
    from clients.sparcl.learner import Learner

    learner = Learner(LearnerConfig(width=4), (1, 8, 8), 10)
    for r in (1, 2):
        state_store.save_state(tmp_path / "run-abc", 3, r, learner.to_bytes())
    (tmp_path / "run-abc" / "device-x").mkdir()  # not a device folder
    assert main(["state", str(tmp_path)]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("folder=run-abc/device-3 round=2 task=") and "buffer_seen=0" in line
