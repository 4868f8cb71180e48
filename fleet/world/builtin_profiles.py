"""The built-in device profiles, every figure with its source, and the memory a board leaves for training.

Each source is a measurement, datasheet or paper, with a URL where one exists,
or "assumption: <why>"; `fleet profiles --sources` prints them.
"""

from __future__ import annotations

from fleet.world.profiles import FIGURES, HPL_TRAIN_EFFICIENCY, DeviceProfile, unknown_name

# The learner's peak-memory estimate (weights, gradients, activations, buffer) does not count
# the processes a device runs around it, so memory_mb is what is left after them too. Measured
# by benchmarks/emulated_pi.sh (results/emulated_pi.txt, 2026-12-05): the peaks (VmHWM) of the
# four processes `fleet device` keeps while its ClientApp trains, added up: the wrapper, Flower's
# SuperNode, its SuperExec, and the ClientApp (whose peak includes the learner's own few MiB on
# digits, so the sum errs high by that much).
# - x86-64, torch 2.13.0+cpu, flwr 1.41.0, native:
#   wrapper 29 + SuperNode 167 + SuperExec 124 + ClientApp 512 = 832 MiB.
# - aarch64, Debian bookworm's torch 1.13.1 (the Pi install of docs/how-to/raspberry-pi.md), flwr 1.41.0, emulated by
#   QEMU 7.2 user mode as a Cortex-A72:
#   wrapper 80 + SuperNode 262 + SuperExec 198 + ClientApp 610 = 1150 MiB (as a Cortex-A53: 1167).
#   An emulation figure: each guest process is a host QEMU process whose peak includes the
#   emulator's own share (translated code, its heap), so a real Pi's is lower; no real Pi was at
#   hand. The built-in boards run aarch64, so their profiles take this figure.
RUNTIME_MB_X86 = 832.0
RUNTIME_MB_AARCH64 = 1150.0
RUNTIME_MB = RUNTIME_MB_AARCH64
RUNTIME_SOURCE = (f"minus {RUNTIME_MB:.0f} MiB for the runtime: the peaks of a device's wrapper, SuperNode, "
                  "SuperExec and training ClientApp added up, measured under QEMU emulation of a Cortex-A72 with "
                  "Debian's torch 1.13.1 (benchmarks/emulated_pi.sh, results/emulated_pi.txt; QEMU's own share "
                  f"included, so a real Pi's is lower; {RUNTIME_MB_X86:.0f} MiB natively on x86-64 with torch "
                  "2.13+cpu)")
# A board whose RAM the runtime does not leave room in keeps this much "for training": the
# profile stays valid, and no learner fits it, so its devices decline every round.
NO_ROOM_MB = 0.01

# Raspberry Pi 4/5 on Raspberry Pi OS Lite (64-bit): the firmware keeps gpu_mem (76 MiB
# by default on 1 GB+ boards; a Pi 5 reports ~150 MiB less than its RAM, e.g. 8048 of
# 8192 MiB) and a Debian Bookworm server image uses ~150 MiB after boot: ~300 MiB.
PI_SYSTEM_MB = 300.0
PI_SYSTEM_SOURCE = ("minus 300 MiB for firmware, kernel and OS: gpu_mem defaults to 76 MiB on 1 GB+ boards "
                    "(raspberrypi.com/documentation/computers/config_txt.html#gpu_mem), a Pi 5 reports ~150 MiB "
                    "less than its RAM (8048 of 8192 MiB on a Pi 500, github.com/geerlingguy/sbc-reviews/issues/60), "
                    "and a Bookworm server image uses ~150 MiB after boot (155 MiB, "
                    "github.com/geerlingguy/sbc-reviews/issues/33); assumption: Raspberry Pi OS Lite, no desktop")


def training_memory_mb(board_mb: float, system_mb: float, runtime_mb: float = RUNTIME_MB) -> float:
    """RAM a device can give to training, MiB: the board's, less what firmware, kernel and OS keep, less the runtime.

    A board's total is not what training gets: counting it would let a Pi Zero 2 W
    "fit" models that the real one swaps or OOM-kills.
    """
    return board_mb - system_mb - runtime_mb


# --------------------------------------------------------------------------- built-in devices

# Sources shared by several profiles. Every figure of every built-in profile names one:
# a measurement or datasheet (with a URL where one exists) or "assumption: <why>".
HPL_EFFICIENCY_SOURCE = ("assumption: a training loop (small batches, framework overhead, memory-bound layers) "
                         f"sustains about {HPL_TRAIN_EFFICIENCY:.0%} of the HPL peak on CPU-class devices; "
                         "calibrate on the device")
GIGE_SOURCE = ("iperf3 over Gigabit Ethernet on a Raspberry Pi 4/5 measures ~941 Mbit/s; full duplex, so the "
               "same both ways (mpr-projects.com/index.php/2023/12/15/rpi-nas-part-3-network-connections/)")
LAN_LATENCY_SOURCE = ("assumption: one gRPC message to a server on the same LAN: sub-millisecond round trip plus "
                      "TCP slow start and framing, ~5 ms")
WIFI_UPLINK_SOURCE = ("assumption: 0.6x the downlink; a 1x1 client with a PCB antenna transmits at lower power "
                      "than the access point, and client uploads measure well below downloads "
                      "(tomshardware.com/reviews/killer-wireless-n-1103-wi-fi-benchmark,3164-4.html)")
WIFI_LATENCY_SOURCE = ("assumption: home Wi-Fi adds a few ms of round trip and airtime contention to the "
                       "gRPC exchange, ~20 ms")
PI_MAINS_AVAILABILITY_SOURCE = ("assumption: a board on mains is online except for updates, reboots and power "
                                "cuts, ~15 minutes a day")
BERNOULLI_SOURCE = "assumption: an independent draw each round (availability_model bernoulli)"
UNUSED_ONOFF_SOURCE = "unused: availability_model is not onoff (DeviceProfile default)"
WIRED_FAILURE_SOURCE = ("assumption: a wired board on mains rarely dies inside a round; the scenario's "
                        "timing.offline_rate_per_s adds time-based failures to every device")
FLAT_RADIO_SOURCE = ("assumption: 0, radio_w is the power of a transfer at any rate; no measurement splits this "
                     "device's transfer power into a base and a per-Mbit/s term")
WIRED_NO_TAIL_SOURCE = ("0: Ethernet has no radio state to leave after a transfer; the NIC's draw is in radio_w "
                        "and idle_w (assumption)")
WIFI_NO_TAIL_SOURCE = ("assumption: 0, a Wi-Fi client returns to power save within a fraction of a second after a "
                       "transfer, no RRC-style tail of seconds; negligible next to a round")
STEADY_JITTER_SOURCE = ("assumption: 0, a dedicated board on mains with a heatsink runs the same work at the "
                        "same speed round after round (within a few percent); an uncooled board throttles at 80 C, "
                        "a steady slowdown that a lower efficiency models better than jitter")


def _builtin(profile: DeviceProfile, **sources: str) -> tuple[DeviceProfile, dict[str, str]]:
    """A built-in profile with the source of each figure; a figure without one is a bug, caught at import."""
    missing = [f for f in FIGURES if not sources.get(f)]
    extra = [f for f in sources if f not in FIGURES]
    if missing or extra:
        raise RuntimeError(f"built-in profile '{profile.name}': figures without a source {missing}, "
                           f"sources for no figure {extra}")
    return profile, {f: sources[f] for f in FIGURES}


# The phone's radio: Huang et al. measured an LTE phone's power (MobiSys 2012).
HUANG_POWER_SOURCE = ("Huang et al., 'A Close Examination of Performance and Power Characteristics of 4G LTE "
                      "Networks', MobiSys 2012: power while transferring on LTE, linear in throughput, "
                      "P = 1288 mW + 52 mW per Mbit/s down + 438 mW per Mbit/s up")
HUANG_TAIL_SOURCE = ("Huang et al., MobiSys 2012: after the last packet of a transfer an LTE phone's radio stays in "
                     "RRC_CONNECTED for a tail of 11.576 s (the inactivity timer), at ~1060 mW, before it drops to "
                     "RRC_IDLE")

_BUILTINS = (
    # Raspberry Pi 5 (4 GB) on Gigabit Ethernet and mains.
    _builtin(
        DeviceProfile(
            name="rpi5",
            peak_gflops=30.0,
            efficiency=HPL_TRAIN_EFFICIENCY,
            memory_mb=training_memory_mb(4096, PI_SYSTEM_MB),  # 2646 MiB
            downlink_mbps=940.0,
            uplink_mbps=940.0,
            downlink_latency_s=0.005,
            uplink_latency_s=0.005,
            active_w=11.0,
            radio_w=3.5,
            idle_w=2.7,
            availability=0.99,
            availability_model="bernoulli",
            failure_prob=0.0,
            speed_jitter=0.0,
        ),
        peak_gflops="HPL 30.249 GFLOP/s (FP64) on a Pi 5 at 2.4 GHz "
                    "(Jeff Geerling, github.com/geerlingguy/top500-benchmark/issues/18)",
        efficiency=HPL_EFFICIENCY_SOURCE,
        memory_mb=f"4 GB board (4096 MiB); {PI_SYSTEM_SOURCE}; {RUNTIME_SOURCE}",
        downlink_mbps=GIGE_SOURCE,
        uplink_mbps=GIGE_SOURCE,
        downlink_latency_s=LAN_LATENCY_SOURCE,
        uplink_latency_s=LAN_LATENCY_SOURCE,
        active_w="11 W at the wall during that HPL run (github.com/geerlingguy/top500-benchmark/issues/18)",
        radio_w="assumption: idle plus ~0.8 W for the NIC and the network stack at full rate",
        idle_w="~2.7 W at the wall, headless, what most reviewers measure "
               "(discussion in github.com/geerlingguy/sbc-reviews/issues/21)",
        availability=PI_MAINS_AVAILABILITY_SOURCE,
        availability_model=BERNOULLI_SOURCE,
        mean_on_s=UNUSED_ONOFF_SOURCE,
        mean_off_s=UNUSED_ONOFF_SOURCE,
        failure_prob=WIRED_FAILURE_SOURCE,
        speed_jitter=STEADY_JITTER_SOURCE,
        downlink_w_per_mbps=FLAT_RADIO_SOURCE,
        uplink_w_per_mbps=FLAT_RADIO_SOURCE,
        tail_s=WIRED_NO_TAIL_SOURCE,
        tail_w=WIRED_NO_TAIL_SOURCE,
    ),
    # Raspberry Pi 4 (2 GB) at 1.8 GHz on Gigabit Ethernet and mains.
    _builtin(
        DeviceProfile(
            name="rpi4",
            peak_gflops=11.9,
            efficiency=HPL_TRAIN_EFFICIENCY,
            memory_mb=training_memory_mb(2048, PI_SYSTEM_MB),  # 598 MiB
            downlink_mbps=940.0,
            uplink_mbps=940.0,
            downlink_latency_s=0.005,
            uplink_latency_s=0.005,
            active_w=7.2,
            radio_w=3.4,
            idle_w=2.6,
            availability=0.99,
            availability_model="bernoulli",
            failure_prob=0.0,
            speed_jitter=0.0,
        ),
        peak_gflops="HPL 11.889 GFLOP/s (FP64) on a Pi 4 at 1.8 GHz "
                    "(Jeff Geerling, github.com/geerlingguy/top500-benchmark/issues/13)",
        efficiency=HPL_EFFICIENCY_SOURCE,
        memory_mb=f"2 GB board (2048 MiB); {PI_SYSTEM_SOURCE}; {RUNTIME_SOURCE}",
        downlink_mbps=GIGE_SOURCE,
        uplink_mbps=GIGE_SOURCE,
        downlink_latency_s=LAN_LATENCY_SOURCE,
        uplink_latency_s=LAN_LATENCY_SOURCE,
        active_w="7.2 W at the wall during that HPL run (github.com/geerlingguy/top500-benchmark/issues/13)",
        radio_w="assumption: idle plus ~0.8 W for the NIC and the network stack at full rate",
        idle_w="2.2-3.0 W idle measured on a Pi 4 (chipwired.com/raspberry-pi-power-use/); 2.6 W taken",
        availability=PI_MAINS_AVAILABILITY_SOURCE,
        availability_model=BERNOULLI_SOURCE,
        mean_on_s=UNUSED_ONOFF_SOURCE,
        mean_off_s=UNUSED_ONOFF_SOURCE,
        failure_prob=WIRED_FAILURE_SOURCE,
        speed_jitter=STEADY_JITTER_SOURCE,
        downlink_w_per_mbps=FLAT_RADIO_SOURCE,
        uplink_w_per_mbps=FLAT_RADIO_SOURCE,
        tail_s=WIRED_NO_TAIL_SOURCE,
        tail_w=WIRED_NO_TAIL_SOURCE,
    ),
    # The same Pi 4 on Wi-Fi: its 1x1 802.11ac radio through a wall or two.
    _builtin(
        DeviceProfile(
            name="rpi4-wifi",
            peak_gflops=11.9,
            efficiency=HPL_TRAIN_EFFICIENCY,
            memory_mb=training_memory_mb(2048, PI_SYSTEM_MB),
            downlink_mbps=50.0,
            uplink_mbps=30.0,
            downlink_latency_s=0.02,
            uplink_latency_s=0.02,
            active_w=7.2,
            radio_w=3.6,
            idle_w=2.6,
            availability=0.95,
            availability_model="bernoulli",
            failure_prob=0.02,
            speed_jitter=0.0,
        ),
        peak_gflops="as rpi4: HPL 11.889 GFLOP/s (github.com/geerlingguy/top500-benchmark/issues/13)",
        efficiency=HPL_EFFICIENCY_SOURCE,
        memory_mb=f"as rpi4: 2 GB board (2048 MiB); {PI_SYSTEM_SOURCE}; {RUNTIME_SOURCE}",
        downlink_mbps="assumption: a typical indoor 802.11ac link through a wall or two, well below the PHY "
                      "rate of the Pi 4's 1x1 radio (Cypress CYW43455, 433 Mbit/s at 80 MHz)",
        uplink_mbps=WIFI_UPLINK_SOURCE,
        downlink_latency_s=WIFI_LATENCY_SOURCE,
        uplink_latency_s=WIFI_LATENCY_SOURCE,
        active_w="as rpi4: 7.2 W under HPL (github.com/geerlingguy/top500-benchmark/issues/13)",
        radio_w="assumption: idle plus ~1 W; Wi-Fi traffic raises a Pi 4's draw more than Ethernet "
                "(chipwired.com/raspberry-pi-power-use/)",
        idle_w="as rpi4: 2.2-3.0 W idle (chipwired.com/raspberry-pi-power-use/)",
        availability="assumption: Wi-Fi drops and roaming take a mains-powered board offline ~5% of rounds",
        availability_model=BERNOULLI_SOURCE,
        mean_on_s=UNUSED_ONOFF_SOURCE,
        mean_off_s=UNUSED_ONOFF_SOURCE,
        failure_prob="assumption: a Wi-Fi link drops inside ~1 round in 50 (interference, roaming)",
        speed_jitter=STEADY_JITTER_SOURCE,
        downlink_w_per_mbps=FLAT_RADIO_SOURCE,
        uplink_w_per_mbps=FLAT_RADIO_SOURCE,
        tail_s=WIFI_NO_TAIL_SOURCE,
        tail_w=WIFI_NO_TAIL_SOURCE,
    ),
    # Raspberry Pi Zero 2 W: 4x Cortex-A53 at 1 GHz, 512 MB, 2.4 GHz 802.11n.
    _builtin(
        DeviceProfile(
            name="rpi-zero2w",
            peak_gflops=3.0,
            efficiency=HPL_TRAIN_EFFICIENCY,
            memory_mb=max(training_memory_mb(512, 128.0), NO_ROOM_MB),  # does not fit: NO_ROOM_MB
            downlink_mbps=20.0,
            uplink_mbps=12.0,
            downlink_latency_s=0.02,
            uplink_latency_s=0.02,
            active_w=2.1,
            radio_w=1.2,
            idle_w=0.6,
            availability=0.9,
            availability_model="bernoulli",
            failure_prob=0.03,
            speed_jitter=0.1,
        ),
        peak_gflops="estimate, not a measurement: a quarter of the Pi 4's HPL 11.9 (1.0 against 1.8 GHz, and the "
                    "in-order A53 does about half the A72's FP work per clock), 4x slower than a Pi 4, within the "
                    "3-5x its cores suggest. Its published HPL result, 0.370 GFLOP/s "
                    "(github.com/geerlingguy/top500-benchmark/issues/26), ran squeezed into 512 MB and says "
                    "little about training; calibrate on a real board",
        efficiency=HPL_EFFICIENCY_SOURCE,
        memory_mb="512 MB board, minus 128 MiB for firmware, kernel and OS: gpu_mem defaults to 64 MiB below "
                  "1 GB (raspberrypi.com/documentation/computers/config_txt.html#gpu_mem) and, assumption, "
                  f"~64 MiB for the kernel and Raspberry Pi OS Lite; {RUNTIME_SOURCE}. That leaves "
                  f"{training_memory_mb(512, 128.0):.0f} MiB: this software does not fit a Zero 2 W, so the "
                  f"profile keeps {NO_ROOM_MB} MiB and its devices decline every round",
        downlink_mbps="assumption: 2.4 GHz 802.11n, 1x1, 72 Mbit/s PHY at 20 MHz (raspberrypi.com Zero 2 W "
                      "product brief) gives ~20 Mbit/s of TCP in a busy 2.4 GHz band",
        uplink_mbps=WIFI_UPLINK_SOURCE,
        downlink_latency_s=WIFI_LATENCY_SOURCE,
        uplink_latency_s=WIFI_LATENCY_SOURCE,
        active_w="2.1 W at the wall during HPL (github.com/geerlingguy/top500-benchmark/issues/26)",
        radio_w="assumption: idle plus ~0.6 W for the Wi-Fi radio and stack while transferring",
        idle_w="~120 mA at 5 V, 0.6 W, idle on Raspberry Pi OS Lite (CNX Software, "
               "cnx-software.com/2021/12/09/raspberry-pi-zero-2-w-power-consumption)",
        availability="assumption: 2.4 GHz Wi-Fi and the small USB supplies such boards run on take it "
                     "offline ~10% of rounds",
        availability_model=BERNOULLI_SOURCE,
        mean_on_s=UNUSED_ONOFF_SOURCE,
        mean_off_s=UNUSED_ONOFF_SOURCE,
        failure_prob="assumption: Wi-Fi drops and under-voltage resets end ~3% of its rounds",
        speed_jitter="assumption: without a heatsink the small package heats up under sustained load and the "
                     "firmware throttles at 80 C, so its speed varies ~10% from round to round",
        downlink_w_per_mbps=FLAT_RADIO_SOURCE,
        uplink_w_per_mbps=FLAT_RADIO_SOURCE,
        tail_s=WIFI_NO_TAIL_SOURCE,
        tail_w=WIFI_NO_TAIL_SOURCE,
    ),
    # NVIDIA Jetson Nano (4 GB) in its 10 W mode, on Gigabit Ethernet and mains.
    _builtin(
        DeviceProfile(
            name="jetson-nano",
            peak_gflops=472.0,
            efficiency=0.1,
            memory_mb=training_memory_mb(4096, 512.0, RUNTIME_MB + 700.0),  # 1734 MiB
            downlink_mbps=940.0,
            uplink_mbps=940.0,
            downlink_latency_s=0.005,
            uplink_latency_s=0.005,
            active_w=10.0,
            radio_w=2.5,
            idle_w=1.5,
            availability=0.98,
            availability_model="bernoulli",
            failure_prob=0.0,
            speed_jitter=0.0,
        ),
        peak_gflops="472 GFLOP/s FP16 peak of the 128-core Maxwell GPU (NVIDIA Jetson Nano module data sheet, "
                    "developer.nvidia.com/embedded/jetson-nano)",
        efficiency="assumption: training small models reaches ~10% of the FP16 peak (kernel launch overhead, "
                   "FP32 arithmetic at half the FP16 rate, memory bandwidth of 25.6 GB/s shared with the CPU)",
        memory_mb="4 GB LPDDR4 shared by CPU, GPU and OS (4096 MiB), minus 512 MiB for a headless L4T "
                  f"(assumption), {RUNTIME_SOURCE}, minus 700 MiB for the CUDA context, cuBLAS and cuDNN "
                  "(assumption: they load into the same shared RAM)",
        downlink_mbps="Gigabit Ethernet (Jetson Nano data sheet); " + GIGE_SOURCE,
        uplink_mbps="Gigabit Ethernet (Jetson Nano data sheet); " + GIGE_SOURCE,
        downlink_latency_s=LAN_LATENCY_SOURCE,
        uplink_latency_s=LAN_LATENCY_SOURCE,
        active_w="the 10 W power mode (MAXN) of the Jetson Nano data sheet",
        radio_w="assumption: idle plus ~1 W for the NIC and the network stack",
        idle_w="assumption: ~1.5 W idle headless, between the 1-2 W that reviews report",
        availability="assumption: on mains and wired, like a Pi, with a little more maintenance downtime",
        availability_model=BERNOULLI_SOURCE,
        mean_on_s=UNUSED_ONOFF_SOURCE,
        mean_off_s=UNUSED_ONOFF_SOURCE,
        failure_prob=WIRED_FAILURE_SOURCE,
        speed_jitter=STEADY_JITTER_SOURCE,
        downlink_w_per_mbps=FLAT_RADIO_SOURCE,
        uplink_w_per_mbps=FLAT_RADIO_SOURCE,
        tail_s=WIRED_NO_TAIL_SOURCE,
        tail_w=WIRED_NO_TAIL_SOURCE,
    ),
    # Phone, Snapdragon 8xx class, training in the background on LTE.
    _builtin(
        DeviceProfile(
            name="phone",
            peak_gflops=25.0,
            efficiency=0.8,
            memory_mb=2560.0 - RUNTIME_MB,  # 1410 MiB
            downlink_mbps=20.0,
            uplink_mbps=8.0,
            downlink_latency_s=0.05,
            uplink_latency_s=0.06,
            active_w=5.0,
            radio_w=1.288,  # 2.328 W receiving at 20 Mbit/s, 4.792 W sending at 8
            idle_w=0.5,
            availability=1 / 3,
            availability_model="onoff",
            mean_on_s=7200.0,
            mean_off_s=14400.0,
            failure_prob=0.08,
            speed_jitter=0.2,
            downlink_w_per_mbps=0.052,
            uplink_w_per_mbps=0.438,
            tail_s=11.576,
            tail_w=1.06,
        ),
        peak_gflops="already a training figure, not HPL: the project's design reference (DESIGN.md, section 5) "
                    "gives ~15-30 GFLOP/s for CPU training on Snapdragon 8xx phones, without a public measurement "
                    "behind it, so treat it as an assumption (SparCL, Wang et al., NeurIPS 2022, trained on a "
                    "Snapdragon 865 CPU but reports times, not FLOP/s); 25 taken",
        efficiency="assumption: 0.8 only derates the training figure for thermal throttling and background load",
        memory_mb="assumption: Android's low-memory killer ends background jobs long before RAM is full; on an "
                  "8 GB phone a background job should stay within ~2.5 GiB (2560 MiB), " + RUNTIME_SOURCE
                  + " (a mobile runtime is of the same order)",
        downlink_mbps="Opensignal, State of LTE (Nov 2016): global average LTE download 17.4 Mbit/s "
                      "(opensignal.com/blog); assumption: a little more on today's LTE, 20",
        uplink_mbps="assumption: Opensignal's reports put 4G uploads at roughly 5-10 Mbit/s, well below "
                    "downloads: the uplink has fewer carriers and MIMO layers, and a phone transmits at 0.2 W "
                    "against a cell's tens of W; 8 taken",
        downlink_latency_s="assumption: LTE round trips are typically 40-60 ms (Opensignal latency reports); "
                           "50 ms",
        uplink_latency_s="assumption: as the downlink plus ~10 ms for LTE's scheduling request and uplink grant "
                         "(3GPP TS 36.213)",
        active_w="assumption: a Snapdragon 8xx draws ~4-6 W under sustained multi-core CPU load before it "
                 "throttles",
        radio_w=HUANG_POWER_SOURCE + "; the 1288 mW base. At this profile's rates: 2.328 W receiving at 20 "
                "Mbit/s, 4.792 W sending at 8. As measured: a sparse update's fewer bytes shorten its upload, "
                "they do not lower the power",
        idle_w="assumption: awake and waiting, ~0.5 W, with the radio idle once its tail is over (tail_w is the "
               "tail's)",
        availability="assumption: the stationary share of the on/off process, 2 h / (2 h + 4 h) = 1/3 "
                     "(used if a world draws a bernoulli availability instead)",
        availability_model="phones train only when idle, charging and on an unmetered network (Bonawitz et al., "
                           "'Towards Federated Learning at Scale: System Design', MLSys 2019, "
                           "arxiv.org/abs/1902.01046), so they come and go in periods",
        mean_on_s="assumption: an idle-and-charging window lasts ~2 h on average (Bonawitz et al. 2019 show "
                  "a strong daily cycle of eligible devices)",
        mean_off_s="assumption: ~4 h between windows on average, so a phone is eligible a third of the time",
        failure_prob="Bonawitz et al. 2019 (arxiv.org/abs/1902.01046): 6-10% of the devices that start a round "
                     "drop out (errors, network, losing eligibility); 8% taken",
        speed_jitter="assumption: phone SoCs throttle under sustained load and share the CPU with other apps, "
                     "so speed varies ~20% from round to round",
        downlink_w_per_mbps=HUANG_POWER_SOURCE + "; 52 mW per Mbit/s received",
        uplink_w_per_mbps=HUANG_POWER_SOURCE + "; 438 mW per Mbit/s sent",
        tail_s=HUANG_TAIL_SOURCE,
        tail_w=HUANG_TAIL_SOURCE,
    ),
    # Microcontroller for contrast: nRF52840 (Cortex-M4F at 64 MHz, 256 KB RAM) on BLE.
    _builtin(
        DeviceProfile(
            name="mcu",
            peak_gflops=0.006,
            efficiency=0.8,
            memory_mb=training_memory_mb(256 / 1024, 24 / 1024, 32 / 1024),  # 200 KiB
            downlink_mbps=0.7,
            uplink_mbps=0.7,
            downlink_latency_s=0.03,
            uplink_latency_s=0.03,
            active_w=0.011,
            radio_w=0.015,
            idle_w=0.00001,
            availability=0.9,
            availability_model="bernoulli",
            failure_prob=0.05,
            speed_jitter=0.0,
        ),
        peak_gflops="assumption from the project's design reference (DESIGN.md, section 5): ~6 MFLOP/s "
                    "sustained by a Cortex-M4F at 64 MHz; its single-precision FPU issues one operation a cycle "
                    "at most, and loads, stores and flash wait states cost the rest; already a sustained figure",
        efficiency="assumption: 0.8, as for the phone, since the peak is already a sustained figure",
        memory_mb="256 KB SRAM (nRF52840 Product Specification, nordicsemi.com), minus 24 KiB for the SoftDevice "
                  "BLE stack (its RAM grows with links and buffers: S140 SoftDevice Specification; assumption "
                  "for one link) and, assumption, 32 KiB for the firmware's stack, heap and training code: "
                  "200 KiB",
        downlink_mbps="Bluetooth LE 1M PHY: 1 Mbit/s on the air, the same both ways (Bluetooth Core "
                      "Specification); assumption: with data length extension and a 247-byte ATT MTU an "
                      "application gets ~0.7 Mbit/s at best (the ballpark of Nordic's nRF Connect SDK Bluetooth "
                      "throughput sample); 0.7 both ways",
        uplink_mbps="as downlink_mbps: the BLE link layer gives both directions the same connection events",
        downlink_latency_s="assumption: one or two connection intervals of 15-30 ms",
        uplink_latency_s="assumption: one or two connection intervals of 15-30 ms",
        active_w="nRF52840 Product Specification: ~3.3 mA with the CPU running from flash at 64 MHz "
                 "(DC/DC, 3 V), ~10-11 mW",
        radio_w="nRF52840 Product Specification: TX at 0 dBm 4.8 mA and RX at 1 Mbit/s 4.6 mA (DC/DC, 3 V), "
                "~15 mW",
        idle_w="nRF52840 Product Specification: System ON sleep with RAM retained draws a few uA, ~10 uW at 3 V",
        availability="assumption: the BLE link to its gateway is up ~90% of rounds",
        availability_model=BERNOULLI_SOURCE,
        mean_on_s=UNUSED_ONOFF_SOURCE,
        mean_off_s=UNUSED_ONOFF_SOURCE,
        failure_prob="assumption: BLE links drop (range, interference, a gateway busy elsewhere) in ~5% of rounds",
        speed_jitter="assumption: 0, a microcontroller without an OS, DVFS or a data cache runs the same code in "
                     "the same cycles every round",
        downlink_w_per_mbps=("assumption: 0, the nRF52840's RX and TX currents are per radio-on time, not per bit "
                             "(nRF52840 Product Specification); radio_w covers any rate"),
        uplink_w_per_mbps=("assumption: 0, the nRF52840's RX and TX currents are per radio-on time, not per bit "
                           "(nRF52840 Product Specification); radio_w covers any rate"),
        tail_s="assumption: 0, between BLE connection events the radio is off (System ON sleep is idle_w)",
        tail_w="assumption: 0, between BLE connection events the radio is off (System ON sleep is idle_w)",
    ),
)

PROFILES: dict[str, DeviceProfile] = {p.name: p for p, _ in _BUILTINS}
PROFILE_SOURCES: dict[str, dict[str, str]] = {p.name: sources for p, sources in _BUILTINS}


def get_profile(name: str) -> DeviceProfile:
    """The built-in profile called `name`; a typo gets the list of valid names."""
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise unknown_name("device profile", name, PROFILES) from None


def profile_sources(name: str) -> dict[str, str]:
    """Figure name -> where a built-in profile's figure comes from (a copy: callers may annotate it)."""
    get_profile(name)
    return dict(PROFILE_SOURCES[name])


