"""The real kernel in a microVM: Debian kernel + busybox initramfs under QEMU."""
