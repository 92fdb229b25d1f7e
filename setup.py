"""tcmu-scst: SCST's device handlers and management model on LIO through TCMU."""

from pathlib import Path

from setuptools import Extension, setup

setup(
    name="tcmu-scst",
    version="0.1.0",
    description="SCST device handlers and management model on the mainline Linux "
    "SCSI target (LIO), served from userspace through TCMU",
    long_description=(Path(__file__).parent / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="GPL-2.0-only",
    license_files=["LICENSE"],
    python_requires=">=3.11",
    packages=[
        "tcmu_scst",
        "tcmu_scst.kernel",
        "tcmu_scst.scsi",
        "tcmu_scst.scst",
        "tcmu_scst.service",
        "tcmu_scst.lab",
        "tcmu_scst.testing",
        "tcmu_scst.handlers",
        "tcmu_scst.shell",
    ],
    # handlers/ and shell/ live at the top of the tree (the design card); the package
    # reaches them through the symlinks tcmu_scst/handlers and tcmu_scst/shell, so a
    # checkout, an editable install and a wheel all import the same tcmu_scst.handlers.
    package_data={"tcmu_scst.lab": ["*.sh"], "tcmu_scst.kernel": ["_fastring.pyi"]},
    # The compiled path for plain READ/WRITE (tcmu_scst.kernel.fastpath). Optional: with
    # no compiler (or no Python headers) the build goes on without it and the pure-Python
    # path serves every command.
    ext_modules=[
        Extension("tcmu_scst.kernel._fastring", ["tcmu_scst/kernel/_fastring.c"],
                  optional=True),
    ],
    data_files=[
        (
            "share/tcmu-scst/udev",
            [
                "udev/README",
                "udev/60-tcmu-scst.rules",
                "udev/tcmu-scst.service",
                "udev/tcmu-scst-restore.service",
            ],
        ),
        ("share/man/man8", ["man/tcmu-scst.8"]),
        ("share/man/man5", ["man/tcmu-scst.conf.5"]),
    ],
    # Floors: the versions the test suite ran with (CI installs the newest).
    install_requires=[
        "pyudev>=0.24.5",
        "pyroute2>=0.9.7",
        "configshell-fb>=2.0.3",
    ],
    extras_require={
        "test": ["pytest>=9.2", "pytest-timeout>=2.4.0", "hypothesis>=6.170", "mypy>=2.4",
                 "ruff>=0.17"],
    },
    entry_points={"console_scripts": ["tcmu-scst = tcmu_scst.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: System :: Filesystems",
    ],
)
