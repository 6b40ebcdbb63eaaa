"""Build hook: generates the gRPC stubs from the repository's `proto/` into the build.

The stubs are modules of the proto's own package, `kraiter.contacts.v1` (the generated
code imports its siblings by that name), installed beside `kraiter_contacts`. Only
`kraiter/contacts/v1/*.proto` is generated: `google.protobuf` comes with protobuf and
`google.rpc` with googleapis-common-protos (a dependency of grpcio-status).

The protos are read from `proto/` next to this file when it exists (a source
distribution carries a copy, see `sdist` below) and from the repository's `proto/`
(`../../proto`) otherwise. `KRAITER_PROTO_DIR` overrides both.
"""

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
CONTRACT = Path("kraiter/contacts/v1")


def proto_dir() -> Path:
    candidates = [os.environ.get("KRAITER_PROTO_DIR"), HERE / "proto", HERE / "../../proto"]
    for candidate in candidates:
        if candidate and (Path(candidate) / CONTRACT).is_dir():
            return Path(candidate).resolve()
    raise SystemExit(
        "kraiter-contacts: no `kraiter/contacts/v1` protos in KRAITER_PROTO_DIR, ./proto "
        "or ../../proto; build from the repository or from its source distribution"
    )


def generate(out: Path) -> None:
    from importlib import resources

    from grpc_tools import protoc

    protos = proto_dir()
    files = sorted(str(path) for path in (protos / CONTRACT).glob("*.proto"))
    well_known = resources.files("grpc_tools") / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{protos}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"kraiter-contacts: protoc failed on {files}")


class build_py_with_stubs(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            raise SystemExit(
                "kraiter-contacts: the stubs are generated into the build; install without -e"
            )
        generate(Path(self.build_lib))


class sdist_with_protos(sdist):
    """A source distribution builds anywhere: it carries the protos it generates from."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        source = proto_dir()
        for path in sorted((source / CONTRACT).glob("*.proto")) + sorted(
            (source / "google/rpc").glob("*.proto")
        ):
            target = Path(base_dir) / "proto" / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


setup(cmdclass={"build_py": build_py_with_stubs, "sdist": sdist_with_protos})
