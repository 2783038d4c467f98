/*
 * Conformance program for the netpop shim (issue 5, acceptance 4).
 *
 * Exercises the intercepted socket calls one by one and prints one line per check. The
 * lines describe outcomes (errno names, booleans, byte strings), never addresses, ports or
 * timings, so that a run on the kernel stack and a run under the shim can be compared
 * byte for byte.
 *
 * Every connection has a "served" end (accepted from the program's own listener) and a
 * "dialed" end (made by the program's connect()). Checks of server-side calls use a pair
 * whose served end is the program's; checks of client-side calls use a pair the program
 * dials. Normally both ends live in this process. A netpop stack cannot connect to its
 * own address, so under a live netpop the other end of each pair comes from a helper
 * process in a network namespace on the far side of the wire (CONF_PEER): it makes kernel
 * sockets there (a client connected to our listener, or a listener for us to dial) and
 * passes them over a Unix socket (SCM_RIGHTS). The output is the same either way: each
 * check prints what the program's end saw.
 *
 * Usage:
 *   conformance                 all checks (address from CONF_ADDR, default 127.0.0.1;
 *                               CONF_PEER=PATH: the other ends come from a peer helper)
 *   conformance peer-helper PATH ADDR
 *                               the helper: listens on the Unix socket PATH, serves one
 *                               program; its sockets use ADDR (run it in the peer
 *                               namespace, without the shim); prints "ready" when listening
 *   conformance socket-probe    one AF_INET stream socket(): "socket: ok" or the errno
 *   conformance exec-probe      execle() itself with an empty environment; the new image
 *                               prints whether LD_PRELOAD still names the shim
 *   conformance print-preload   (used by exec-probe)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static struct in_addr conf_addr;
static volatile sig_atomic_t sigpipes;
/* Connection to the peer helper (CONF_PEER), or -1: the other ends are made here. */
static int peer_helper = -1;

static void check(const char *name, const char *fmt, ...)
{
    va_list ap;
    printf("%-28s ", name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

static const char *err_name(int e)
{
    switch (e) {
    case 0: return "0";
    case EAGAIN: return "EAGAIN";
    case EINPROGRESS: return "EINPROGRESS";
    case EALREADY: return "EALREADY";
    case EISCONN: return "EISCONN";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ECONNRESET: return "ECONNRESET";
    case EPIPE: return "EPIPE";
    case ENOTCONN: return "ENOTCONN";
    case EINVAL: return "EINVAL";
    case EBADF: return "EBADF";
    case ENETDOWN: return "ENETDOWN";
    case EADDRINUSE: return "EADDRINUSE";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EEXIST: return "EEXIST";
    case ENOENT: return "ENOENT";
    default: return strerror(e);
    }
}

static void die(const char *what)
{
    printf("FATAL %s: %s\n", what, err_name(errno));
    exit(2);
}

static struct sockaddr_in addr_of(unsigned short port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr = conf_addr;
    a.sin_port = htons(port);
    return a;
}

static unsigned short port_of(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        die("getsockname");
    return ntohs(a.sin_port);
}

static int make_listener(void)
{
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        die("setsockopt SO_REUSEADDR");
    struct sockaddr_in a = addr_of(0);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind");
    if (listen(fd, 16) < 0)
        die("listen");
    return fd;
}

/* Waits up to 5 s for `events` on fd; returns revents (0 on timeout). */
static int wait_for(int fd, short events)
{
    struct pollfd p = { .fd = fd, .events = events };
    int n = poll(&p, 1, 5000);
    return n > 0 ? p.revents : 0;
}

static int set_nonblocking(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    return fcntl(fd, F_SETFL, on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK));
}

/* The address a listener accepts on (its own, or a peer helper's). */
static struct sockaddr_in listener_addr(int listener)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (getsockname(listener, (struct sockaddr *)&a, &len) < 0)
        die("getsockname listener");
    return a;
}

/* ---- the peer helper ------------------------------------------------------------------ */

struct peer_request {
    char op; /* 'C': a client connected to `target`; 'L': a listener */
    struct sockaddr_in target;
};

static void send_fd_reply(int conn, int err, int fd)
{
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { &err, sizeof err };
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (fd >= 0) {
        memset(cbuf, 0, sizeof cbuf);
        m.msg_control = cbuf;
        m.msg_controllen = sizeof cbuf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    if (sendmsg(conn, &m, 0) < 0)
        die("helper sendmsg");
}

/* Serves one program: each request gets an errno (0 = ok) and, if ok, a socket. */
static int peer_helper_main(const char *path, const char *addr)
{
    struct in_addr own;
    if (inet_pton(AF_INET, addr, &own) != 1) {
        fprintf(stderr, "bad helper address\n");
        return 2;
    }
    int l = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    struct sockaddr_un u;
    memset(&u, 0, sizeof u);
    u.sun_family = AF_UNIX;
    snprintf(u.sun_path, sizeof u.sun_path, "%s", path);
    if (l < 0 || bind(l, (struct sockaddr *)&u, sizeof u) < 0 || listen(l, 1) < 0)
        die("helper unix socket");
    printf("ready\n");
    fflush(stdout);
    int conn = accept(l, NULL, NULL);
    if (conn < 0)
        die("helper accept");
    struct peer_request r;
    while (recv(conn, &r, sizeof r, 0) == (ssize_t)sizeof r) {
        int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0), err = 0;
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        if (fd < 0) {
            err = errno;
        } else if (r.op == 'C') {
            if (connect(fd, (struct sockaddr *)&r.target, sizeof r.target) < 0)
                err = errno;
        } else {
            a.sin_addr = own;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0)
                err = errno;
        }
        send_fd_reply(conn, err, err ? -1 : fd);
        if (fd >= 0)
            close(fd);
    }
    return 0;
}

/* Asks the helper for a socket; dies if it cannot make one. */
static int peer_call(char op, struct sockaddr_in target)
{
    struct peer_request r;
    memset(&r, 0, sizeof r);
    r.op = op;
    r.target = target;
    if (send(peer_helper, &r, sizeof r, 0) != (ssize_t)sizeof r)
        die("peer request");
    int err = -1, fd = -1;
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { &err, sizeof err };
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = cbuf;
    m.msg_controllen = sizeof cbuf;
    if (recvmsg(peer_helper, &m, MSG_CMSG_CLOEXEC) != (ssize_t)sizeof err)
        die("peer reply");
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (c && c->cmsg_type == SCM_RIGHTS)
        memcpy(&fd, CMSG_DATA(c), sizeof fd);
    if (err != 0 || fd < 0) {
        errno = err;
        die(op == 'C' ? "peer connect" : "peer listen");
    }
    /* Like a socket made here: close-on-exec off. */
    fcntl(fd, F_SETFD, 0);
    return fd;
}

static void connect_peer_helper(const char *path)
{
    peer_helper = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un u;
    memset(&u, 0, sizeof u);
    u.sun_family = AF_UNIX;
    snprintf(u.sun_path, sizeof u.sun_path, "%s", path);
    if (peer_helper < 0 || connect(peer_helper, (struct sockaddr *)&u, sizeof u) < 0)
        die("connect to CONF_PEER");
}

/* ---- the other end of a connection ------------------------------------------------------ */

/* A blocking client connected to our `listener`: made here, or by the peer helper. */
static int other_client(int listener)
{
    if (peer_helper >= 0)
        return peer_call('C', listener_addr(listener));
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0)
        die("socket");
    struct sockaddr_in a = listener_addr(listener);
    if (connect(c, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect");
    return c;
}

/* A listener for us to dial: made here, or by the peer helper. */
static int other_listener(void)
{
    return peer_helper >= 0 ? peer_call('L', addr_of(0)) : make_listener();
}

/* An address where nobody listens: a port bound once and closed again. */
static struct sockaddr_in closed_address(void)
{
    int tmp;
    if (peer_helper >= 0) {
        tmp = peer_call('L', addr_of(0));
    } else {
        tmp = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = addr_of(0);
        bind(tmp, (struct sockaddr *)&a, sizeof a);
    }
    struct sockaddr_in a = listener_addr(tmp);
    close(tmp);
    return a;
}

/* A pair whose served end *server is ours (accepted from `listener`). */
static void make_pair_served(int listener, int *client, int *server)
{
    *client = other_client(listener);
    *server = accept(listener, NULL, NULL);
    if (*server < 0)
        die("accept");
}

/* A pair whose dialed end *client is ours (blocking connect to `far_listener`). */
static void make_pair_dialed(int far_listener, int *client, int *server)
{
    *client = socket(AF_INET, SOCK_STREAM, 0);
    if (*client < 0)
        die("socket");
    struct sockaddr_in a = listener_addr(far_listener);
    if (connect(*client, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect");
    *server = accept(far_listener, NULL, NULL);
    if (*server < 0)
        die("accept");
}

static void send_all(int fd, const char *s)
{
    size_t n = strlen(s);
    if (send(fd, s, n, MSG_NOSIGNAL) != (ssize_t)n)
        die("send");
}

/* Dials `listener` (the other end's) without blocking. */
static void check_nonblocking_connect(int listener)
{
    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = listener_addr(listener);
    int rc = connect(c, (struct sockaddr *)&a, sizeof a);
    check("connect.nonblocking", "%s", rc == 0 ? "connected at once" :
          errno == EINPROGRESS ? "in progress" : err_name(errno));
    int rev = wait_for(c, POLLOUT);
    check("connect.poll_out", "writable=%d error=%d", !!(rev & POLLOUT), !!(rev & POLLERR));
    int err = -1;
    socklen_t len = sizeof err;
    getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &len);
    check("connect.so_error", "%s", err_name(err));
    rc = connect(c, (struct sockaddr *)&a, sizeof a);
    check("connect.again", "%s", rc == 0 ? "0" : err_name(errno));
    int s = accept(listener, NULL, NULL);
    check("accept.after_connect", "%s", s >= 0 ? "ok" : err_name(errno));
    close(s);
    close(c);
}

static void check_refused(void)
{
    struct sockaddr_in a = closed_address();
    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(c, (struct sockaddr *)&a, sizeof a);
    int e = rc < 0 ? errno : 0;
    check("refused.connect", "%s", e == EINPROGRESS || e == ECONNREFUSED ? "EINPROGRESS or ECONNREFUSED" : err_name(e));
    if (e == EINPROGRESS) {
        int rev = wait_for(c, POLLOUT);
        check("refused.poll", "out=%d err=%d hup=%d", !!(rev & POLLOUT), !!(rev & POLLERR), !!(rev & POLLHUP));
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &len);
        check("refused.so_error", "%s", err_name(err));
        err = -1;
        getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &len);
        check("refused.so_error_cleared", "%s", err_name(err));
    } else {
        check("refused.poll", "out=1 err=1 hup=1");
        check("refused.so_error", "ECONNREFUSED");
        check("refused.so_error_cleared", "0");
    }
    close(c);
}

static void check_data_calls(int listener)
{
    int c, s;
    char buf[64];
    make_pair_served(listener, &c, &s);

    set_nonblocking(s, 1);
    int fl = fcntl(s, F_GETFL);
    check("fcntl.o_nonblock", "%d", !!(fl & O_NONBLOCK));
    ssize_t n = recv(s, buf, sizeof buf, 0);
    check("recv.empty_nonblocking", "%s", n < 0 ? err_name(errno) : "data?");
    n = read(s, buf, sizeof buf);
    check("read.empty_nonblocking", "%s", n < 0 ? err_name(errno) : "data?");
    set_nonblocking(s, 0);
    n = recv(s, buf, sizeof buf, MSG_DONTWAIT);
    check("recv.msg_dontwait", "%s", n < 0 ? err_name(errno) : "data?");
    int on = 1;
    ioctl(s, FIONBIO, &on);
    n = recv(s, buf, sizeof buf, 0);
    check("ioctl.fionbio", "%s", n < 0 ? err_name(errno) : "data?");
    on = 0;
    ioctl(s, FIONBIO, &on);

    send_all(c, "hello");
    wait_for(s, POLLIN);
    int avail = -1;
    ioctl(s, FIONREAD, &avail);
    check("ioctl.fionread", "%d", avail);
    n = recv(s, buf, 3, MSG_PEEK);
    check("recv.msg_peek", "%zd '%.*s'", n, (int)(n > 0 ? n : 0), buf);
    n = recv(s, buf, sizeof buf, 0);
    check("recv.after_peek", "%zd '%.*s'", n, (int)(n > 0 ? n : 0), buf);

    struct iovec out[2] = { { "ab", 2 }, { "cde", 3 } };
    n = writev(c, out, 2);
    check("writev", "%zd", n);
    char b1[2], b2[8];
    struct iovec in[2] = { { b1, 2 }, { b2, 8 } };
    wait_for(s, POLLIN);
    n = readv(s, in, 2);
    check("readv", "%zd '%.2s%.*s'", n, b1, (int)(n > 2 ? n - 2 : 0), b2);

    struct msghdr m;
    memset(&m, 0, sizeof m);
    struct iovec one = { "msg", 3 };
    m.msg_iov = &one;
    m.msg_iovlen = 1;
    n = sendmsg(c, &m, MSG_NOSIGNAL);
    check("sendmsg", "%zd", n);
    wait_for(s, POLLIN);
    struct iovec back = { buf, sizeof buf };
    memset(&m, 0, sizeof m);
    m.msg_iov = &back;
    m.msg_iovlen = 1;
    n = recvmsg(s, &m, 0);
    check("recvmsg", "%zd '%.*s' flags=%d", n, (int)(n > 0 ? n : 0), buf, m.msg_flags);

    struct sockaddr_in local, peer, clocal;
    socklen_t l1 = sizeof local, l2 = sizeof peer, l3 = sizeof clocal;
    getsockname(s, (struct sockaddr *)&local, &l1);
    getpeername(s, (struct sockaddr *)&peer, &l2);
    getsockname(c, (struct sockaddr *)&clocal, &l3);
    check("getsockname.accepted", "port_is_listener=%d len=%u", ntohs(local.sin_port) == port_of(listener), l1);
    check("getpeername.accepted", "matches_client=%d len=%u",
          peer.sin_port == clocal.sin_port && peer.sin_addr.s_addr == clocal.sin_addr.s_addr, l2);
    struct sockaddr_in tiny;
    socklen_t tl = 4;
    getsockname(s, (struct sockaddr *)&tiny, &tl);
    check("getsockname.truncated", "len=%u", tl);
    l2 = sizeof peer;
    int fresh = socket(AF_INET, SOCK_STREAM, 0);
    int rc = getpeername(fresh, (struct sockaddr *)&peer, &l2);
    check("getpeername.unconnected", "%s", rc < 0 ? err_name(errno) : "0");
    close(fresh);

    int val = 0;
    socklen_t vl = sizeof val;
    getsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &val, &vl);
    check("sockopt.so_reuseaddr", "%d", val);
    val = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &val, sizeof val);
    val = 0;
    vl = sizeof val;
    getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &val, &vl);
    check("sockopt.tcp_nodelay", "%d", val);
    vl = sizeof val;
    getsockopt(c, SOL_SOCKET, SO_TYPE, &val, &vl);
    check("sockopt.so_type", "%s", val == SOCK_STREAM ? "SOCK_STREAM" : "other");
    vl = sizeof val;
    getsockopt(listener, SOL_SOCKET, SO_ACCEPTCONN, &val, &vl);
    check("sockopt.so_acceptconn", "%d", val);

    close(c);
    close(s);
}

static int epoll_count(int ep, int timeout, unsigned *events)
{
    struct epoll_event ev[4];
    int n = epoll_wait(ep, ev, 4, timeout);
    if (events)
        *events = n > 0 ? ev[0].events : 0;
    return n;
}

static void drain(int fd)
{
    char buf[256];
    while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
        ;
}

static void check_epoll(int listener)
{
    int c, s;
    make_pair_served(listener, &c, &s);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 7 };
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    int rc = epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    check("epoll.add_twice", "%s", rc < 0 ? err_name(errno) : "0");
    check("epoll.level.idle", "%d", epoll_count(ep, 0, NULL));
    send_all(c, "x");
    unsigned got;
    int n = epoll_count(ep, 5000, &got);
    check("epoll.level.ready", "%d in=%d", n, !!(got & EPOLLIN));
    check("epoll.level.again", "%d", epoll_count(ep, 0, NULL));
    drain(s);
    check("epoll.level.drained", "%d", epoll_count(ep, 0, NULL));

    ev.events = EPOLLIN | EPOLLET;
    epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev);
    send_all(c, "y");
    check("epoll.edge.ready", "%d", epoll_count(ep, 5000, NULL));
    check("epoll.edge.no_repeat", "%d", epoll_count(ep, 100, NULL));
    send_all(c, "z");
    check("epoll.edge.new_data", "%d", epoll_count(ep, 5000, NULL));
    drain(s);

    ev.events = EPOLLIN | EPOLLONESHOT;
    epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev);
    send_all(c, "w");
    check("epoll.oneshot.ready", "%d", epoll_count(ep, 5000, NULL));
    check("epoll.oneshot.disarmed", "%d", epoll_count(ep, 100, NULL));
    epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev);
    check("epoll.oneshot.rearmed", "%d", epoll_count(ep, 5000, NULL));
    drain(s);

    ev.events = EPOLLIN | EPOLLRDHUP;
    epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev);
    shutdown(c, SHUT_WR);
    n = epoll_count(ep, 5000, &got);
    check("epoll.rdhup", "%d in=%d rdhup=%d hup=%d", n, !!(got & EPOLLIN), !!(got & EPOLLRDHUP), !!(got & EPOLLHUP));
    rc = epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL);
    check("epoll.del", "%s", rc < 0 ? err_name(errno) : "0");
    rc = epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL);
    check("epoll.del_again", "%s", rc < 0 ? err_name(errno) : "0");

    /* A listener in epoll: readable when a connection waits. */
    ev.events = EPOLLIN;
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    check("epoll.listener.idle", "%d", epoll_count(ep, 0, NULL));
    int c2 = other_client(listener);
    check("epoll.listener.ready", "%d", epoll_count(ep, 5000, NULL));
    int s2 = accept(listener, NULL, NULL);
    check("epoll.listener.accepted", "%d", epoll_count(ep, 0, NULL));
    epoll_ctl(ep, EPOLL_CTL_DEL, listener, NULL);
    close(s2);
    close(c2);
    close(ep);
    close(c);
    close(s);
}

static void check_mixed_poll_select(int listener)
{
    int c, s, p[2];
    make_pair_served(listener, &c, &s);
    if (pipe(p) < 0)
        die("pipe");
    if (write(p[1], "p", 1) != 1)
        die("write pipe");
    struct pollfd fds[3] = { { .fd = p[0], .events = POLLIN }, { .fd = s, .events = POLLIN },
                             { .fd = c, .events = POLLOUT } };
    int n = poll(fds, 3, 1000);
    check("poll.mixed.pipe_only", "n=%d pipe=%d sock_in=%d sock_out=%d", n, fds[0].revents, fds[1].revents,
          fds[2].revents);
    send_all(c, "q");
    wait_for(s, POLLIN);
    n = poll(fds, 3, 1000);
    check("poll.mixed.both", "n=%d pipe=%d sock_in=%d", n, fds[0].revents, fds[1].revents);

    /* poll(2) writes revents of every entry: a negative fd gets 0 even if the array held
     * an old value there (lighttpd counts entries with revents != 0). */
    struct pollfd holes[2] = { { .fd = -1, .events = POLLIN, .revents = POLLIN | POLLHUP },
                               { .fd = s, .events = POLLIN } };
    n = poll(holes, 2, 1000);
    check("poll.negative_fd", "n=%d hole=%d sock_in=%d", n, holes[0].revents, !!(holes[1].revents & POLLIN));

    fd_set r, w;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_SET(p[0], &r);
    FD_SET(s, &r);
    FD_SET(c, &w);
    int maxfd = p[0] > s ? p[0] : s;
    maxfd = maxfd > c ? maxfd : c;
    struct timeval tv = { 1, 0 };
    n = select(maxfd + 1, &r, &w, NULL, &tv);
    check("select.mixed", "n=%d pipe=%d sock=%d out=%d", n, FD_ISSET(p[0], &r), FD_ISSET(s, &r), FD_ISSET(c, &w));
    drain(s);
    char x;
    if (read(p[0], &x, 1) != 1)
        die("read pipe");
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    FD_SET(s, &r);
    tv.tv_sec = 0;
    tv.tv_usec = 100000;
    n = select(maxfd + 1, &r, NULL, NULL, &tv);
    check("select.timeout", "n=%d", n);

    /* Blocking poll woken by the other side. */
    pid_t pid = fork();
    if (pid == 0) {
        usleep(100000);
        send(c, "late", 4, MSG_NOSIGNAL);
        _exit(0);
    }
    struct pollfd one = { .fd = s, .events = POLLIN };
    n = poll(&one, 1, 5000);
    check("poll.blocking_wakeup", "n=%d in=%d", n, !!(one.revents & POLLIN));
    waitpid(pid, NULL, 0);
    close(p[0]);
    close(p[1]);
    close(c);
    close(s);
}

static void check_dup(int listener)
{
    int c, s, p[2];
    char buf[16];
    make_pair_served(listener, &c, &s);
    if (pipe(p) < 0)
        die("pipe");
    int keep = dup(s);
    if (write(p[1], "from pipe", 9) != 9)
        die("write pipe");
    int rc = dup2(p[0], s);
    check("dup2.over_socket", "%s", rc == s ? "ok" : err_name(errno));
    ssize_t n = read(s, buf, sizeof buf);
    check("dup2.reads_pipe", "%zd '%.*s'", n, (int)(n > 0 ? n : 0), buf);
    send_all(c, "still");
    wait_for(keep, POLLIN);
    n = recv(keep, buf, sizeof buf, 0);
    check("dup.keeps_connection", "%zd '%.*s'", n, (int)(n > 0 ? n : 0), buf);
    int d = fcntl(keep, F_DUPFD_CLOEXEC, 100);
    check("fcntl.dupfd_cloexec", "fd>=100:%d cloexec=%d", d >= 100, !!(fcntl(d, F_GETFD) & FD_CLOEXEC));
    send_all(d, "via dup");
    wait_for(c, POLLIN);
    n = recv(c, buf, sizeof buf, 0);
    check("dup.send", "%zd '%.*s'", n, (int)(n > 0 ? n : 0), buf);
    close(d);
    close(keep);
    close(s);
    close(p[1]);
    close(c);
}

static void check_shutdown_and_epipe(int far_listener)
{
    int c, s;
    char buf[16];
    make_pair_dialed(far_listener, &c, &s);
    shutdown(c, SHUT_WR);
    wait_for(s, POLLIN);
    ssize_t n = recv(s, buf, sizeof buf, 0);
    check("shutdown.wr.peer_eof", "%zd", n);
    n = send(c, "x", 1, MSG_NOSIGNAL);
    check("shutdown.wr.send", "%s", n < 0 ? err_name(errno) : "sent");
    send_all(s, "back");
    wait_for(c, POLLIN);
    n = recv(c, buf, sizeof buf, 0);
    check("shutdown.wr.still_reads", "%zd '%.*s'", n, (int)(n > 0 ? n : 0), buf);
    shutdown(c, SHUT_RD);
    n = recv(c, buf, sizeof buf, 0);
    check("shutdown.rd.recv", "%zd", n);
    int rc = shutdown(c, 7);
    check("shutdown.bad_how", "%s", rc < 0 ? err_name(errno) : "0");
    close(c);
    close(s);

    /* EPIPE: the peer closed; the first send is answered by a reset, later ones fail. */
    make_pair_dialed(far_listener, &c, &s);
    close(s);
    wait_for(c, POLLIN);
    int first_err = 0;
    for (int i = 0; i < 50 && !first_err; i++) {
        if (send(c, "data", 4, MSG_NOSIGNAL) < 0)
            first_err = errno;
        else
            usleep(20000);
    }
    check("epipe.msg_nosignal", "%s sigpipes=%d", err_name(first_err), (int)sigpipes);
    signal(SIGPIPE, SIG_IGN);
    n = write(c, "data", 4);
    check("epipe.write_ignored_signal", "%s", n < 0 ? err_name(errno) : "sent");
    close(c);

    int fresh = socket(AF_INET, SOCK_STREAM, 0);
    n = send(fresh, "x", 1, MSG_NOSIGNAL);
    check("send.unconnected", "%s", n < 0 ? err_name(errno) : "sent");
    rc = shutdown(fresh, SHUT_RDWR);
    check("shutdown.unconnected", "%s", rc < 0 ? err_name(errno) : "0");
    close(fresh);
}

static void check_fork_listener(int listener)
{
    int go[2];
    if (pipe(go) < 0)
        die("pipe");
    pid_t pid = fork();
    if (pid == 0) {
        /* The child waits in poll on the inherited listener before the connection comes
         * (the parent connects once the child has told it that it is about to poll). */
        close(go[0]);
        if (write(go[1], "p", 1) != 1)
            _exit(5);
        struct pollfd p = { .fd = listener, .events = POLLIN };
        if (poll(&p, 1, 5000) != 1 || !(p.revents & POLLIN))
            _exit(4);
        int s = accept(listener, NULL, NULL);
        if (s < 0)
            _exit(3);
        send(s, "from child", 10, MSG_NOSIGNAL);
        close(s);
        _exit(0);
    }
    close(go[1]);
    char ready;
    if (read(go[0], &ready, 1) != 1)
        die("read pipe");
    close(go[0]);
    usleep(50000);
    int c = other_client(listener);
    char buf[16];
    wait_for(c, POLLIN);
    ssize_t n = recv(c, buf, sizeof buf, MSG_WAITALL);
    int status = -1;
    waitpid(pid, &status, 0);
    check("fork.child_accepts", "%zd '%.*s' exit=%d", n, (int)(n > 0 ? n : 0), buf,
          WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    close(c);
}

static void on_sigpipe(int sig)
{
    (void)sig;
    sigpipes++;
}

int main(int argc, char **argv)
{
    const char *addr = getenv("CONF_ADDR");
    if (inet_pton(AF_INET, addr ? addr : "127.0.0.1", &conf_addr) != 1) {
        fprintf(stderr, "bad CONF_ADDR\n");
        return 2;
    }
    if (argc > 3 && strcmp(argv[1], "peer-helper") == 0)
        return peer_helper_main(argv[2], argv[3]);
    const char *peer = getenv("CONF_PEER");
    if (peer && *peer)
        connect_peer_helper(peer);
    if (argc > 1 && strcmp(argv[1], "socket-probe") == 0) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        printf("socket: %s\n", fd >= 0 ? "ok" : err_name(errno));
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "print-preload") == 0) {
        const char *p = getenv("LD_PRELOAD");
        printf("preload kept: %s\n", p && strstr(p, "netpop_shim") ? "yes" : "no");
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "exec-probe") == 0) {
        char *const empty[] = { NULL };
        fflush(stdout);
        execle("/proc/self/exe", "conformance", "print-preload", (char *)NULL, empty);
        printf("execle failed: %s\n", err_name(errno));
        return 1;
    }
    signal(SIGPIPE, on_sigpipe);
    int listener = make_listener();
    int far_listener = other_listener();
    check_nonblocking_connect(far_listener);
    check_refused();
    check_data_calls(listener);
    check_epoll(listener);
    check_mixed_poll_select(listener);
    check_dup(listener);
    check_shutdown_and_epipe(far_listener);
    check_fork_listener(listener);
    close(far_listener);
    close(listener);
    check("done", "ok");
    return 0;
}
