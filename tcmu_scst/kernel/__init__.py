"""Everything that touches the kernel ABI: UIO, the TCMU ring, netlink, configfs."""
