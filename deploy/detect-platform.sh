#!/bin/sh
# Detects the platform Meshlite is being deployed on (after seed 000's detect-platform.sh) and
# prints one KEY=VALUE line each, so the output can be sourced or written to an env file:
#
#   ARCH       amd64 | arm64 | armv7 | unknown         (uname -m)
#   OS         linux | darwin | windows | unknown      (uname -s)
#   PLATFORM   jetson | raspberry-pi | wsl2 | linux | other
#   MODEL      the device tree model (Jetson, Pi) or empty
#   GPU        jetson-orin | cuda | none                (nvidia-smi, Tegra release, lspci)
#   RUST_TARGET  the Rust target triple of the release binary for this machine
#   SUGGESTED_MODE  standalone | dual-write          (dual-write when a fleet bundle exists)
#
# Usage: deploy/detect-platform.sh [FLEET_DIR]   (FLEET_DIR defaults to /etc/meshlite/fleet)
# POSIX sh; reads /proc and /sys only; never needs root.
set -eu

detect_arch() {
    case "$(uname -m)" in
        x86_64 | amd64) echo amd64 ;;
        aarch64 | arm64) echo arm64 ;;
        armv7l) echo armv7 ;;
        *) echo unknown ;;
    esac
}

detect_os() {
    case "$(uname -s)" in
        Linux*) echo linux ;;
        Darwin*) echo darwin ;;
        MINGW* | MSYS* | CYGWIN*) echo windows ;;
        *) echo unknown ;;
    esac
}

# The device tree model ("NVIDIA Jetson Orin Nano ...", "Raspberry Pi 5 Model B ..."); the file
# ends in a NUL byte, which tr removes.
device_model() {
    if [ -r /proc/device-tree/model ]; then
        tr -d '\000' </proc/device-tree/model
    fi
}

detect_platform() {
    model=$1
    if [ -r /etc/nv_tegra_release ]; then
        echo jetson
        return
    fi
    case "$model" in
        *Jetson*) echo jetson; return ;;
        *"Raspberry Pi"*) echo raspberry-pi; return ;;
    esac
    if [ -n "${WSL_DISTRO_NAME:-}" ] || grep -qi microsoft /proc/sys/kernel/osrelease 2>/dev/null; then
        echo wsl2
        return
    fi
    if [ "$(detect_os)" = linux ]; then echo linux; else echo other; fi
}

detect_gpu() {
    platform=$1
    if command -v nvidia-smi >/dev/null 2>&1; then
        if nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | grep -q Orin; then
            echo jetson-orin
        else
            echo cuda
        fi
    elif [ "$platform" = jetson ]; then
        # Jetson's L4T has no nvidia-smi on older releases; the Tegra GPU is always there.
        echo jetson-orin
    elif command -v lspci >/dev/null 2>&1 && lspci 2>/dev/null | grep -qi nvidia; then
        echo cuda
    else
        echo none
    fi
}

rust_target() {
    case "$1" in
        amd64) echo x86_64-unknown-linux-gnu ;;
        arm64) echo aarch64-unknown-linux-gnu ;;
        *) echo unsupported ;;
    esac
}

fleet_dir=${1:-/etc/meshlite/fleet}
arch=$(detect_arch)
model=$(device_model)
platform=$(detect_platform "$model")
mode=standalone
if [ -d "$fleet_dir" ]; then mode=dual-write; fi

echo "ARCH=$arch"
echo "OS=$(detect_os)"
echo "PLATFORM=$platform"
echo "MODEL='$(printf '%s' "$model" | tr -d "'")'"
echo "GPU=$(detect_gpu "$platform")"
echo "RUST_TARGET=$(rust_target "$arch")"
echo "SUGGESTED_MODE=$mode"
