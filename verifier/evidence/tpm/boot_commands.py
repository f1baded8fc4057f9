"""GRUB's PCR8 commands that boot something, appraised against the command lines.

GRUB measures every command it runs (``grub_cmd: `` + the expanded words joined
by spaces) and, inside its Linux loaders, the kernel command line it hands over
(``kernel_cmdline: `` + the kernel path and arguments, each word with ``\\``,
``'`` and ``"`` escaped and double-quoted if it holds a space; BOOT_IMAGE= is
added after measuring). Only the Linux loaders measure a command line, so another
loader boots with arguments no reference sees: GRUB's EFI ``chainloader`` passes
its words as the image's LoadOptions, and root can then extend PCR8 with the
approved ``kernel_cmdline`` and ``linux`` strings after boot. Hence, whenever a
boot is appraised:

* a command of GRUB's other loaders (:data:`OTHER_LOADERS` and the families in
  :data:`OTHER_LOADER_PREFIXES`: chainloader, multiboot, BSD, XNU, legacy, Xen,
  DOS/Windows and Plan 9 loaders, device trees) is ``tpm.boot.boot_command_not_allowed``;
* each ``linux``/``linuxefi``/``linux16`` command must pass a command line the
  boot measured or the reference allows (``tpm.boot.kernel_cmdline_mismatch``):
  its words after the verb must be those of a measured kernel command line,
  GRUB's quoting undone, or be an allowed line themselves. In every real GRUB log
  in the shared vectors (26 with a ``linux`` command) the two agree word for
  word; the synthetic swtpm logs measure two more words in ``kernel_cmdline``
  than their ``linux`` command has, so a proposal from such a host lists the
  command's line too (:func:`unmeasured_linux_lines`).

``initrd`` commands load no code and take no arguments but paths (PCR9 covers
the files).

A command's verb is read as GRUB reads it (:func:`grub_command`): a leading ``!``
only inverts the exit status of the command after it, and GRUB measures the
whole line, so ``! chainloader ...`` runs the chainloader. And no GRUB command is
named by a path or a quoted word: a "command" whose first word starts with ``/``,
``(`` or ``"`` or holds a ``\\`` is a kernel command line relabelled (GRUB quotes a
kernel path with a space), and is appraised as one (:func:`is_command_line`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from verifier.verdict import Reason

__all__ = [
    "INITRD_COMMANDS",
    "LINUX_COMMANDS",
    "OTHER_LOADERS",
    "OTHER_LOADER_PREFIXES",
    "appraise_grub_commands",
    "grub_command",
    "is_command_line",
    "loader_words",
    "named_paths",
    "unmeasured_linux_lines",
]

LINUX_COMMANDS = frozenset({"linux", "linuxefi", "linux16"})
INITRD_COMMANDS = frozenset({"initrd", "initrdefi", "initrd16"})
# GRUB 2.12 grub-core/loader (and Fedora's patches): every command that loads an
# image to boot, or something a booted kernel takes as given, other than Linux's.
OTHER_LOADERS = frozenset(
    {
        "acpi",  # ACPI tables the kernel takes as given, as it does a device tree
        "badram",  # memory maps and raw hardware writes: what the kernel runs on
        "cutmem",
        "appleloader",
        "chainloader",
        "devicetree",
        "efiemu_loadcore",
        "loadbios",
        "freedos",
        "ntldr",
        "plan9",
        "pxechainloader",
        # rmmod tpm unloads GRUB's measuring hook: nothing after it is measured.
        "rmmod",
        "setpci",
        "truecrypt",
        "wrmsr",
    }
)
OTHER_LOADER_PREFIXES = (
    "multiboot",  # multiboot, multiboot2
    "module",  # module, module2 (multiboot modules)
    "kfreebsd",  # kfreebsd, kfreebsd_loadenv, kfreebsd_module, kfreebsd_module_elf
    "knetbsd",  # knetbsd, knetbsd_module, knetbsd_module_elf
    "kopenbsd",  # kopenbsd, kopenbsd_ramdisk
    "xnu_",  # xnu_kernel, xnu_kernel64, xnu_mkext, xnu_kext, xnu_ramdisk, ...
    "legacy_",  # legacy_kernel, legacy_initrd, legacy_initrd_nounzip (legacycfg)
    "xen_",  # xen_hypervisor, xen_module (arm64)
    "write_",  # write_byte, write_word, write_dword (physical memory)
    "out",  # outb, outw, outl (I/O ports)
)


def loader_words(cmdline: str) -> list[str]:
    """A GRUB-measured kernel command line split back into the loader's words."""
    words: list[str] = []
    word: list[str] = []
    started = quoted = escaped = False
    for char in cmdline:
        if escaped:
            word.append(char)
            escaped = False
        elif char == "\\":
            escaped = started = True
        elif char == '"':
            quoted = not quoted
            started = True
        elif char == " " and not quoted:
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(char)
            started = True
    if started:
        words.append("".join(word))
    return words


def grub_command(command: str) -> tuple[str, str]:
    """(verb, the rest) of a measured GRUB command, past any ``!`` GRUB strips."""
    verb, _, rest = command.partition(" ")
    while verb == "!":
        verb, _, rest = rest.partition(" ")
    return verb, rest


def is_command_line(text: str) -> bool:
    """Whether a measured GRUB string is a kernel command line, whatever its label:
    its first word (past any ``!``) is a path or quoted, which no command's is."""
    verb, _ = grub_command(text)
    # A block list ("2048+16384") opens a file by sectors: a path, too.
    return verb.startswith(("/", "(", '"', "+")) or verb[:1].isdigit() or "\\" in verb


def named_paths(commands: Iterable[str], *, kernel: bool) -> set[str]:
    """The files the ``linux`` (``kernel``) or ``initrd`` commands name."""
    paths: set[str] = set()
    for command in commands:
        verb, rest = grub_command(command)
        args = rest.split()
        if kernel and verb in LINUX_COMMANDS:
            paths.update(args[:1])  # linux PATH [kernel arguments...]
        elif not kernel and verb in INITRD_COMMANDS:
            paths.update(args)  # initrd PATH [PATH...]
    return paths


def _other_loader(verb: str) -> bool:
    return verb in OTHER_LOADERS or verb.startswith(OTHER_LOADER_PREFIXES)


def _command_not_allowed(verb: str, rest: str, verbs: frozenset[str] | None) -> bool:
    return (
        _other_loader(verb)
        or (verbs is not None and verb not in verbs)
        # initrd newc:NAME:PATH places an approved file anywhere in the initramfs
        # (over its /init, say): only plain paths.
        or (verb in INITRD_COMMANDS and ":" in rest)
    )


def _linux_lines(commands: Iterable[str]) -> list[str]:
    """The words after the verb of each Linux loader command, as GRUB joined them."""
    lines = []
    for command in commands:
        verb, rest = grub_command(command)
        if verb in LINUX_COMMANDS:
            lines.append(rest)
    return lines


def unmeasured_linux_lines(commands: Sequence[str], cmdlines: Iterable[str]) -> list[str]:
    """The ``linux`` commands' lines that no measured kernel command line spells."""
    # GRUB measures a command as its words joined by single spaces.
    measured = {" ".join(loader_words(line)) for line in cmdlines}
    return [line for line in _linux_lines(commands) if line not in measured]


def appraise_grub_commands(
    commands: Sequence[str],
    cmdlines: Iterable[str],
    *,
    allowed: Callable[[str], bool],
    verbs: frozenset[str] | None,
) -> list[Reason]:
    """The rules of the module docstring over a boot's GRUB commands: other loaders'
    and commands outside ``verbs`` (the reference's allow-list, when it has one),
    then ``linux`` commands, each in log order. ``allowed`` says whether the
    reference allows a kernel command line."""
    reasons = [
        Reason("tpm.boot.boot_command_not_allowed", command)
        for command in commands
        if _command_not_allowed(*grub_command(command), verbs)
    ]
    reasons += [
        Reason(
            "tpm.boot.kernel_cmdline_mismatch",
            f"linux {line!r}: neither a measured kernel command line nor an allowed one",
        )
        for line in unmeasured_linux_lines(commands, cmdlines)
        if not allowed(line)
    ]
    return reasons
