/* vfeed: puts chosen raw frames "in front of" vivid's capture node, for the qemu guest test.
 *
 *   vfeed setup W H            DV timings W x H on /dev/video0 (capture) and /dev/video1 (output),
 *                              loop_video=1 and osd_text_mode=2 (no text) on the capture node.
 *   vfeed ctrls                only the two controls (safe while the capture node streams).
 *   vfeed disconnect           presses vivid's "Disconnect" button: the nodes go away under their
 *                              users (as a USB camera unplugged); vivid registers them again when
 *                              the last user closes them.
 *   vfeed hold                 keeps /dev/video1 open until SIGTERM (so a disconnect lasts).
 *   vfeed play FOURCC W H SECS FILE [SECS FILE]...
 *                              streams raw frames (tightly packed) to the output node, showing each
 *                              FILE for SECS seconds (0 = until told, or the device goes away).
 *                              SIGUSR1 moves on to the next FILE at once (past the last: ends), so
 *                              the caller can pace the images by what the reader has processed.
 *
 * Static, no libraries: it runs in a busybox initramfs on x86_64 and arm64.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/videodev2.h>

#define CAP "/dev/video0"
#define OUT "/dev/video1"
#define NBUF 4

static volatile sig_atomic_t stop, steps;
static void on_term(int s) { (void)s; stop = 1; }
static void on_usr1(int s) { (void)s; steps++; }

static int xioctl(int fd, unsigned long req, void *arg) {
    int r;
    do r = ioctl(fd, req, arg); while (r < 0 && errno == EINTR && !stop);
    return r;
}

static int opendev(const char *p) {
    int fd = open(p, O_RDWR);
    if (fd < 0) { fprintf(stderr, "vfeed: open %s: %s\n", p, strerror(errno)); exit(1); }
    return fd;
}

static int set_timings(const char *path, unsigned w, unsigned h) {
    int fd = opendev(path);
    for (unsigned i = 0;; i++) {
        struct v4l2_enum_dv_timings e;
        memset(&e, 0, sizeof e);
        e.index = i;
        if (xioctl(fd, VIDIOC_ENUM_DV_TIMINGS, &e) < 0) break;
        if (e.timings.bt.width == w && e.timings.bt.height == h && !e.timings.bt.interlaced) {
            if (xioctl(fd, VIDIOC_S_DV_TIMINGS, &e.timings) < 0) {
                fprintf(stderr, "vfeed: %s S_DV_TIMINGS %ux%u: %s\n", path, w, h, strerror(errno));
                exit(1);
            }
            close(fd);
            return 0;
        }
    }
    fprintf(stderr, "vfeed: %s has no DV timings %ux%u\n", path, w, h);
    exit(1);
}

static void set_ctrl(int fd, const char *name, int value) {
    struct v4l2_queryctrl q;
    memset(&q, 0, sizeof q);
    q.id = V4L2_CTRL_FLAG_NEXT_CTRL;
    while (xioctl(fd, VIDIOC_QUERYCTRL, &q) == 0) {
        if (strcmp((const char *)q.name, name) == 0) {
            struct v4l2_control c = {.id = q.id, .value = value};
            if (xioctl(fd, VIDIOC_S_CTRL, &c) < 0) {
                fprintf(stderr, "vfeed: set %s: %s\n", name, strerror(errno));
                exit(1);
            }
            return;
        }
        q.id |= V4L2_CTRL_FLAG_NEXT_CTRL;
    }
    fprintf(stderr, "vfeed: no control named %s\n", name);
    exit(1);
}

static void ctrls(void) {
    int fd = opendev(CAP);
    set_ctrl(fd, "Loop Video", 1);
    set_ctrl(fd, "OSD Text Mode", 2);
    close(fd);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Wall clock in ms since the epoch: the clock the daemon stamps its frames with. */
static long long wall_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

static unsigned char *load(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "vfeed: %s: %s\n", path, strerror(errno)); exit(1); }
    unsigned char *b = malloc(want);
    size_t got = fread(b, 1, want, f);
    fclose(f);
    if (got != want) { fprintf(stderr, "vfeed: %s: %zu bytes, %zu needed\n", path, got, want); exit(1); }
    return b;
}

static int play(int argc, char **argv) {
    if (argc < 6 || (argc - 4) % 2) { fprintf(stderr, "vfeed: play FOURCC W H SECS FILE...\n"); return 2; }
    const char *cc = argv[1];
    unsigned w = atoi(argv[2]), h = atoi(argv[3]);
    unsigned bpp = strcmp(cc, "YUYV") == 0 ? 2 : 1;
    size_t size = (size_t)w * h * bpp;
    int n = (argc - 4) / 2;
    double *secs = calloc(n, sizeof *secs);
    unsigned char **img = calloc(n, sizeof *img);
    for (int i = 0; i < n; i++) {
        secs[i] = atof(argv[4 + 2 * i]);
        img[i] = load(argv[5 + 2 * i], size);
    }
    int fd = opendev(OUT);
    struct v4l2_format f;
    memset(&f, 0, sizeof f);
    f.type = V4L2_BUF_TYPE_VIDEO_OUTPUT;
    f.fmt.pix.width = w;
    f.fmt.pix.height = h;
    f.fmt.pix.pixelformat = v4l2_fourcc(cc[0], cc[1], cc[2], cc[3]);
    f.fmt.pix.field = V4L2_FIELD_NONE;
    if (xioctl(fd, VIDIOC_S_FMT, &f) < 0) { perror("vfeed: S_FMT"); return 1; }
    if (f.fmt.pix.width != w || f.fmt.pix.height != h || f.fmt.pix.bytesperline != w * bpp) {
        fprintf(stderr, "vfeed: output format is %ux%u stride %u\n", f.fmt.pix.width, f.fmt.pix.height,
                f.fmt.pix.bytesperline);
        return 1;
    }
    struct v4l2_requestbuffers rb = {.count = NBUF, .type = V4L2_BUF_TYPE_VIDEO_OUTPUT, .memory = V4L2_MEMORY_MMAP};
    if (xioctl(fd, VIDIOC_REQBUFS, &rb) < 0) { perror("vfeed: REQBUFS"); return 1; }
    unsigned char *map[NBUF];
    int holds[NBUF];
    for (unsigned i = 0; i < rb.count && i < NBUF; i++) {
        struct v4l2_buffer b = {.index = i, .type = V4L2_BUF_TYPE_VIDEO_OUTPUT, .memory = V4L2_MEMORY_MMAP};
        if (xioctl(fd, VIDIOC_QUERYBUF, &b) < 0) { perror("vfeed: QUERYBUF"); return 1; }
        map[i] = mmap(NULL, b.length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, b.m.offset);
        if (map[i] == MAP_FAILED) { perror("vfeed: mmap"); return 1; }
        memcpy(map[i], img[0], size);
        holds[i] = 0;
        b.bytesused = size;
        b.field = V4L2_FIELD_NONE;
        if (xioctl(fd, VIDIOC_QBUF, &b) < 0) { perror("vfeed: QBUF"); return 1; }
    }
    int type = V4L2_BUF_TYPE_VIDEO_OUTPUT;
    if (xioctl(fd, VIDIOC_STREAMON, &type) < 0) { perror("vfeed: STREAMON"); return 1; }
    fprintf(stderr, "vfeed: streaming %s %ux%u, %d image(s)\n", cc, w, h, n);
    double start = now(), until = start + secs[0];
    int cur = 0, rc = 0;
    sig_atomic_t handled = 0;
    unsigned long frames = 0;
    while (!stop) {
        double t = now();
        for (;;) {
            int told = handled != steps;
            if (!told && !(secs[cur] > 0 && t >= until)) break;
            handled += told;
            if (cur + 1 >= n) goto done;
            cur++;
            // Timed steps keep to the schedule; a step on request starts the image's time afresh.
            until = (told ? t : until) + secs[cur];
            fprintf(stderr, "vfeed: image %d at %.1fs wall_ms=%lld\n", cur, t - start, wall_ms());
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int pr = poll(&p, 1, 1000);
        if (pr < 0) { if (errno == EINTR) continue; perror("vfeed: poll"); rc = 1; break; }
        if (pr == 0) continue;
        if (p.revents & (POLLERR | POLLHUP)) { fprintf(stderr, "vfeed: device gone\n"); rc = 3; break; }
        struct v4l2_buffer b = {.type = V4L2_BUF_TYPE_VIDEO_OUTPUT, .memory = V4L2_MEMORY_MMAP};
        if (xioctl(fd, VIDIOC_DQBUF, &b) < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            fprintf(stderr, "vfeed: DQBUF: %s\n", strerror(errno));
            rc = 3;
            break;
        }
        if (holds[b.index] != cur) { memcpy(map[b.index], img[cur], size); holds[b.index] = cur; }
        b.bytesused = size;
        b.field = V4L2_FIELD_NONE;
        if (xioctl(fd, VIDIOC_QBUF, &b) < 0) { fprintf(stderr, "vfeed: QBUF: %s\n", strerror(errno)); rc = 3; break; }
        frames++;
    }
done:
    fprintf(stderr, "vfeed: %lu frames in %.1fs\n", frames, now() - start);
    xioctl(fd, VIDIOC_STREAMOFF, &type);
    close(fd);
    return rc;
}

int main(int argc, char **argv) {
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGUSR1, on_usr1);
    if (argc >= 4 && strcmp(argv[1], "setup") == 0) {
        unsigned w = atoi(argv[2]), h = atoi(argv[3]);
        set_timings(CAP, w, h);
        set_timings(OUT, w, h);
        ctrls();
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "ctrls") == 0) { ctrls(); return 0; }
    if (argc >= 2 && strcmp(argv[1], "hold") == 0) {
        int fd = opendev(OUT);
        while (!stop) pause();
        close(fd);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "disconnect") == 0) {
        int fd = opendev(CAP);
        set_ctrl(fd, "Disconnect", 1);
        close(fd);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "play") == 0) return play(argc - 1, argv + 1);
    fprintf(stderr, "usage: vfeed setup W H | vfeed ctrls | vfeed disconnect | vfeed hold | vfeed play FOURCC W H SECS FILE [SECS FILE]...\n");
    return 2;
}
