"""The attack lab behind ``tinyward lab up|run|down`` (docs/lab.md): network namespaces
joined by bridges, a real fleet server and devices, ordinary LAN chatter, attacks with
real Debian tools aimed only at lab hosts, labelled captures and detection figures."""
