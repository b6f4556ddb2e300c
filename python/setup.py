"""Builds the wheel: the Python client plus the `roo` engine binary.

The binary is, in order: the file named by ROO_BINARY (a `roo` already
built, e.g. by CI's release build), or `cargo build --release --locked -p
roo-appliance --bin roo` run in the checkout this directory sits in (a Rust
toolchain is then needed). It lands in `roo/_bin/roo`, without its debug sections; the wheel is tagged
for this platform, since it holds a native executable.
"""

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent


def engine_binary() -> Path:
    given = os.environ.get("ROO_BINARY")
    if given:
        path = Path(given)
        if not path.is_file():
            raise SystemExit(f"ROO_BINARY={given}: no such file; expected a built roo binary")
        return path
    if not (CHECKOUT / "appliance" / "Cargo.toml").is_file():
        raise SystemExit(
            f"{CHECKOUT} is not a roo checkout (no appliance/Cargo.toml): set ROO_BINARY to a built roo binary"
        )
    cargo = os.environ.get("CARGO", "cargo")
    command = [cargo, "build", "--release", "--locked", "-p", "roo-appliance", "--bin", "roo"]
    print("building the roo engine:", " ".join(command), flush=True)
    subprocess.run(command, cwd=CHECKOUT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", CHECKOUT / "target"))
    return target / "release" / "roo"


class BuildWithEngine(build_py):
    def run(self):
        super().run()
        binary = engine_binary()
        out = Path(self.build_lib) / "roo" / "_bin"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(binary, out / "roo")
        os.chmod(out / "roo", 0o755)
        # The release profile keeps line tables (backtraces on the
        # developer's machine); the wheel's copy goes without: 189 MB -> 37.
        strip = shutil.which("strip")
        if strip:
            subprocess.run([strip, "--strip-debug", str(out / "roo")], check=True)


class PlatformWheel(bdist_wheel):
    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        # Any Python 3 on this platform: the client is pure Python, the
        # engine a native executable (no extension module, no libpython).
        plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        return "py3", "none", plat


setup(cmdclass={"build_py": BuildWithEngine, "bdist_wheel": PlatformWheel})
