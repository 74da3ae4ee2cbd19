// Verilator harness of mmfree.hw.soc.SimTop: the link's byte stream on a TCP socket (or a pseudo-terminal).
//
//   simtop [--port N] [--host ADDR] [--pty] [--trace FILE] [--quiet-cycles N] [--batch N]
//
// TCP (default): listens on ADDR:N (127.0.0.1, N = 0 picks a free port) and prints one line on stdout,
//   "listening 127.0.0.1:PORT", then nothing else. One client at a time; the design keeps running
//   between clients. Every accepted connection and every disconnect resets the design (rst for a few
//   cycles): a partial frame, pending replies and a running GENERATE are dropped, while the memories
//   and the model flag/hash/vocabulary (reset_less registers) are kept, so a new client can check INFO
//   and skip the reload.
// --pty: a pseudo-terminal instead of TCP; prints "pty /dev/pts/N". No connect/disconnect events (like
//   a UART), so no resets.
// --trace FILE: dump every signal (FST or VCD, whichever the binary was built with) until exit.
//
// The clock runs freely; bytes move between the socket and the design without blocking it (non-blocking
// I/O, polled every --batch cycles, at most). When the design is idle (SimTop.idle), nothing is queued
// and no byte moved for --quiet-cycles cycles (longer than the frame decoder's inter-byte timeout, so
// that a cut frame still gets its TRUNCATED reply), the harness sleeps in poll() until a byte or a
// client arrives: an idle simulator costs no CPU. SIGINT/SIGTERM end it cleanly (trace closed); a
// summary goes to stderr.

#include "Vsimtop.h"
#include "verilated.h"
#if VM_TRACE
#if VM_TRACE_FST
#include "verilated_fst_c.h"
typedef VerilatedFstC TraceFile;
#else
#include "verilated_vcd_c.h"
typedef VerilatedVcdC TraceFile;
#endif
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <string>
#include <vector>

#ifndef QUIET_CYCLES
#define QUIET_CYCLES 100000
#endif

static volatile sig_atomic_t g_stop = 0;
static void on_signal(int) { g_stop = 1; }

static double now_s() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char* what) {
    fprintf(stderr, "simtop: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

// A byte queue: append at the end, consume from the front, compacted now and then.
struct Queue {
    std::vector<uint8_t> buf;
    size_t head = 0;
    size_t size() const { return buf.size() - head; }
    bool empty() const { return head == buf.size(); }
    uint8_t front() const { return buf[head]; }
    void pop(size_t n = 1) {
        head += n;
        if (head == buf.size()) {
            buf.clear();
            head = 0;
        } else if (head > (1u << 20) && head * 2 > buf.size()) {
            buf.erase(buf.begin(), buf.begin() + head);
            head = 0;
        }
    }
    void clear() { buf.clear(); head = 0; }
    const uint8_t* data() const { return buf.data() + head; }
};

static void usage() {
    fprintf(stderr,
            "usage: simtop [--port N] [--host ADDR] [--pty] [--trace FILE] [--quiet-cycles N] [--batch N]\n");
    exit(2);
}

int main(int argc, char** argv) {
    int port = 0;
    std::string host = "127.0.0.1";
    bool use_pty = false;
    const char* trace_path = nullptr;
    uint64_t quiet_cycles = QUIET_CYCLES;
    int batch = 1024;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> const char* {
            if (i + 1 >= argc) usage();
            return argv[++i];
        };
        if (a == "--port") port = atoi(next());
        else if (a == "--host") host = next();
        else if (a == "--pty") use_pty = true;
        else if (a == "--trace") trace_path = next();
        else if (a == "--quiet-cycles") quiet_cycles = strtoull(next(), nullptr, 0);
        else if (a == "--batch") batch = atoi(next());
        else if (a == "--help" || a == "-h") usage();
        else if (a.rfind("+verilator", 0) == 0) continue;
        else {
            fprintf(stderr, "simtop: unknown argument %s\n", a.c_str());
            usage();
        }
    }
    if (batch < 1) batch = 1;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);

    VerilatedContext* ctx = new VerilatedContext;
    ctx->commandArgs(argc, argv);
    Vsimtop* top = new Vsimtop{ctx};

#if VM_TRACE
    TraceFile* tfp = nullptr;
    if (trace_path) {
        ctx->traceEverOn(true);
        tfp = new TraceFile;
        top->trace(tfp, 99);
        tfp->open(trace_path);
    }
#else
    if (trace_path) {
        fprintf(stderr, "simtop: this binary was built without tracing (build(..., trace=...))\n");
        return 2;
    }
#endif

    // ------------------------------------------------------------ link endpoint
    int listen_fd = -1, link_fd = -1, pty_slave = -1;
    if (use_pty) {
        int m = posix_openpt(O_RDWR | O_NOCTTY);
        if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0) die("posix_openpt");
        const char* name = ptsname(m);
        if (!name) die("ptsname");
        struct termios tio;
        if (tcgetattr(m, &tio) == 0) {
            cfmakeraw(&tio);
            tcsetattr(m, TCSANOW, &tio);
        }
        // keep the slave open ourselves: the master then never reports a hang-up between clients
        pty_slave = open(name, O_RDWR | O_NOCTTY);
        set_nonblock(m);
        link_fd = m;
        printf("pty %s\n", name);
        fflush(stdout);
    } else {
        listen_fd = socket(AF_INET, SOCK_STREAM, 0);
        if (listen_fd < 0) die("socket");
        int one = 1;
        setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in addr;
        memset(&addr, 0, sizeof addr);
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
            fprintf(stderr, "simtop: bad --host %s\n", host.c_str());
            return 2;
        }
        if (bind(listen_fd, (struct sockaddr*)&addr, sizeof addr) < 0) die("bind");
        if (listen(listen_fd, 1) < 0) die("listen");
        socklen_t len = sizeof addr;
        if (getsockname(listen_fd, (struct sockaddr*)&addr, &len) < 0) die("getsockname");
        set_nonblock(listen_fd);
        printf("listening %s:%d\n", host.c_str(), ntohs(addr.sin_port));
        fflush(stdout);
    }

    // ------------------------------------------------------------ simulation
    uint64_t cycle = 0, last_activity = 0, bytes_in = 0, bytes_out = 0, clients = 0, sleeps = 0;
    uint64_t time_ps = 0;
    Queue rxq, txq;
    const size_t RX_BUFFER = 1 << 16, TX_LIMIT = 1 << 16;
    int reset_left = 0;

#ifdef MAT_HALF_PS
    // The core's tile streams on a clock of their own (a target with matrix_clock_hz): mat_clk toggles
    // every MAT_HALF_PS, and its edges are evaluated in time order between clk's; mat_rst goes with rst.
    uint64_t mat_next = MAT_HALF_PS;
    auto mat_edges_before = [&](uint64_t t) {
        while (mat_next < t) {
            top->mat_rst = reset_left > 0;
            top->mat_clk = !top->mat_clk;
            top->eval();
#if VM_TRACE
            if (tfp) tfp->dump(mat_next);
#endif
            mat_next += MAT_HALF_PS;
        }
    };
#else
    auto mat_edges_before = [](uint64_t) {};
#endif

    auto tick = [&]() {
        top->rst = reset_left > 0;
        bool offer = !rxq.empty() && reset_left == 0;
        top->rx_valid = offer;
        top->rx_data = offer ? rxq.front() : 0;
        bool tx_ready = txq.size() < TX_LIMIT;
        top->tx_ready = tx_ready;
        top->clk = 0;
        top->eval();
#if VM_TRACE
        if (tfp) tfp->dump(time_ps);
#endif
        mat_edges_before(time_ps + 5000);
        bool rx_take = offer && top->rx_ready;
        bool tx_take = top->tx_valid && tx_ready && reset_left == 0;
        uint8_t tx_byte = top->tx_data;
        time_ps += 5000;
        top->clk = 1;
        top->eval();
#if VM_TRACE
        if (tfp) tfp->dump(time_ps);
#endif
        mat_edges_before(time_ps + 5000);
        time_ps += 5000;
        if (rx_take) rxq.pop();
        if (tx_take) txq.buf.push_back(tx_byte);
        if (rx_take || tx_take) last_activity = cycle;
        if (reset_left > 0) {
            --reset_left;
            last_activity = cycle;
        }
        ++cycle;
    };
    auto reset_design = [&]() {
        reset_left = 4;
        rxq.clear();
        txq.clear();
    };
    reset_design();

    auto drop_client = [&]() {
        if (link_fd >= 0 && !use_pty) {
            close(link_fd);
            link_fd = -1;
            reset_design();
        }
    };

    double t0 = now_s();
    std::vector<uint8_t> tmp(RX_BUFFER);
    while (!g_stop) {
        // a new client
        if (listen_fd >= 0 && link_fd < 0) {
            int c = accept(listen_fd, nullptr, nullptr);
            if (c >= 0) {
                set_nonblock(c);
                int one = 1;
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                link_fd = c;
                ++clients;
                reset_design();
            }
        }
        // bytes in
        if (link_fd >= 0 && rxq.size() < RX_BUFFER) {
            ssize_t n = read(link_fd, tmp.data(), RX_BUFFER - rxq.size());
            if (n > 0) {
                rxq.buf.insert(rxq.buf.end(), tmp.data(), tmp.data() + n);
                bytes_in += n;
                last_activity = cycle;
            } else if (n == 0) {
                if (!use_pty) drop_client();
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                if (!use_pty) drop_client();
            }
        }
        // clock: a batch, cut short once a reply has stopped flowing so it leaves at once; short batches
        // while no input is queued, so that the next command is picked up quickly
        uint64_t start = cycle;
        int n_cycles = rxq.empty() ? (batch < 128 ? batch : 128) : batch;
        for (int i = 0; i < n_cycles; ++i) {
            tick();
            if (!txq.empty() && (cycle - last_activity > 16 || txq.size() >= TX_LIMIT)) break;
            if (rxq.empty() && txq.empty() && top->idle && reset_left == 0 &&
                cycle - last_activity > quiet_cycles)
                break;
        }
        (void)start;
        // bytes out
        if (!txq.empty()) {
            if (link_fd < 0) {
                txq.clear();  // nobody to hear it
            } else {
                ssize_t n = write(link_fd, txq.data(), txq.size());
                if (n > 0) {
                    bytes_out += n;
                    txq.pop(n);
                } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    if (!use_pty) drop_client();
                    txq.clear();
                }
            }
        }
        // idle: sleep until something arrives
        if (rxq.empty() && txq.empty() && top->idle && reset_left == 0 && cycle - last_activity > quiet_cycles) {
            struct pollfd pf;
            pf.fd = link_fd >= 0 ? link_fd : listen_fd;
            pf.events = POLLIN;
            pf.revents = 0;
            if (pf.fd >= 0) {
                poll(&pf, 1, 50);
                ++sleeps;
            }
        } else if (!txq.empty() && link_fd >= 0) {
            // the peer is not reading: wait for room instead of spinning
            struct pollfd pf = {link_fd, POLLOUT, 0};
            if (txq.size() >= TX_LIMIT) poll(&pf, 1, 10);
        }
    }

    double secs = now_s() - t0;
#if VM_TRACE
    if (tfp) {
        tfp->close();
        delete tfp;
    }
#endif
    top->final();
    fprintf(stderr, "simtop: %llu cycles in %.2f s (%.0f cycles/s), %llu bytes in, %llu bytes out, %llu clients\n",
            (unsigned long long)cycle, secs, secs > 0 ? cycle / secs : 0.0, (unsigned long long)bytes_in,
            (unsigned long long)bytes_out, (unsigned long long)clients);
    if (link_fd >= 0) close(link_fd);
    if (listen_fd >= 0) close(listen_fd);
    if (pty_slave >= 0) close(pty_slave);
    delete top;
    delete ctx;
    return 0;
}
