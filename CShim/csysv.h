// CSysV: the C side of the pool. Everything here is either variadic, a macro, a struct with a
// flexible array member, or must run in a window where Swift code is not safe (between fork and
// the child's first Swift instruction, inside a signal handler). All functions share the prefix
// `csysv_`; each carries a one-line reason for living in C rather than Swift.
//
// Return conventions follow the system calls they wrap: -1 with errno set on failure.
#ifndef CSYSV_H
#define CSYSV_H

// No _GNU_SOURCE here: defining it changes how glibc's headers declare shared types (fd_set,
// rusage…), and Clang then rejects a Swift target that imports both this module and Foundation.
// The few GNU-only declarations we need are spelled out below instead.

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

// MARK: - Message queues

/// The message layout `msgsnd`/`msgrcv` expect: a `long` type followed by the text. Swift never
/// sees `mtext` (a flexible array member, which Swift cannot import); it asks for the text pointer.
typedef struct csysv_msgbuf {
    long mtype;
    char mtext[];
} csysv_msgbuf;

// The kernel reads `long mtype` then the text immediately after it; our layout must match
// `struct msgbuf` from <sys/msg.h> (glibc declares it with `char mtext[1]`).
_Static_assert(offsetof(csysv_msgbuf, mtext) == sizeof(long), "mtext must follow mtype");
#ifdef __USE_GNU   // compiled by scripts/smoke.sh with -D_GNU_SOURCE (the module cannot set it)
_Static_assert(offsetof(struct msgbuf, mtext) == offsetof(csysv_msgbuf, mtext),
               "csysv_msgbuf must match the system's struct msgbuf");
_Static_assert(sizeof(struct msgbuf) >= sizeof(csysv_msgbuf), "struct msgbuf is a long plus text");
#endif

/// Bytes before the text in a message buffer (the `long mtype`).
/// Why C: `offsetof` on a flexible array member.
static inline size_t csysv_msg_header_size(void) { return offsetof(csysv_msgbuf, mtext); }

/// Pointer to the text of a message buffer allocated with at least `csysv_msg_header_size()` bytes.
/// Why C: Swift cannot address a flexible array member.
static inline void *csysv_msg_text(void *buffer) { return ((csysv_msgbuf *)buffer)->mtext; }

/// Creates a new private queue with permission bits `mode` (e.g. 0600).
/// Why C: `IPC_PRIVATE` is a macro cast `((key_t) 0)` Swift does not import.
static inline int csysv_msgget_private(int mode) {
    return msgget(IPC_PRIVATE, IPC_CREAT | IPC_EXCL | (mode & 0777));
}

/// Sends `length` bytes of text from `buffer` (laid out as `csysv_msgbuf`) with type `mtype`.
/// Why C: stores `mtype` into the struct header so Swift only handles a pointer and a length.
static inline int csysv_msgsnd(int qid, void *buffer, long mtype, size_t length, int nowait) {
    ((csysv_msgbuf *)buffer)->mtype = mtype;
    return msgsnd(qid, buffer, length, nowait ? IPC_NOWAIT : 0);
}

/// Receives into `buffer` (capacity `capacity` bytes of text). Returns the text length, or -1.
/// `mtype` selects as in msgrcv(2); the received type is stored in `*out_type`.
/// Why C: reads `mtype` back out of the struct header; `MSG_NOERROR` stays off so a message that
/// does not fit fails with E2BIG instead of being truncated silently.
static inline ssize_t csysv_msgrcv(int qid, void *buffer, size_t capacity, long mtype, int nowait,
                                   long *out_type) {
    ssize_t n = msgrcv(qid, buffer, capacity, mtype, nowait ? IPC_NOWAIT : 0);
    if (n >= 0 && out_type) *out_type = ((csysv_msgbuf *)buffer)->mtype;
    return n;
}

/// Takes the next message (`mtype` selects as in msgrcv(2)) even when it is larger than
/// `capacity`, keeping only its first `capacity` bytes (`MSG_NOERROR`). Returns the kept length,
/// or -1.
/// Why C: the flags, and the same header read as `csysv_msgrcv`. For a message that would
/// otherwise block a queue's head for good (E2BIG at every try): cleared by the master, or told
/// apart by a worker whose buffer is one byte longer than any message of the pool's.
static inline ssize_t csysv_msgrcv_truncating(int qid, void *buffer, size_t capacity, long mtype, int nowait,
                                              long *out_type) {
    ssize_t n = msgrcv(qid, buffer, capacity, mtype, (nowait ? IPC_NOWAIT : 0) | MSG_NOERROR);
    if (n >= 0 && out_type) *out_type = ((csysv_msgbuf *)buffer)->mtype;
    return n;
}

/// What IPC_STAT tells about a queue, flattened (the kernel struct nests `ipc_perm`).
typedef struct csysv_msqinfo {
    unsigned long messages;     ///< msg_qnum: messages in the queue
    unsigned long bytes;        ///< __msg_cbytes: bytes of text in the queue
    unsigned long max_bytes;    ///< msg_qbytes: capacity in bytes
    unsigned int mode;          ///< permission bits
    uid_t uid;                  ///< owner
    pid_t last_send_pid;        ///< msg_lspid
    pid_t last_receive_pid;     ///< msg_lrpid
    long change_time;           ///< msg_ctime: creation or last IPC_SET, seconds since the epoch
    uid_t creator_uid;          ///< msg_perm.cuid: who created it (IPC_SET changes the owner, never this)
} csysv_msqinfo;

/// Reads a queue's depth, capacity and owner.
/// Why C: `struct msqid_ds` has glibc-private field names (`__msg_cbytes`) and a nested perm.
static inline int csysv_msgctl_stat(int qid, csysv_msqinfo *info) {
    struct msqid_ds ds;
    if (msgctl(qid, IPC_STAT, &ds) < 0) return -1;
    info->messages = ds.msg_qnum;
    info->bytes = ds.__msg_cbytes;
    info->max_bytes = ds.msg_qbytes;
    info->mode = ds.msg_perm.mode & 0777;
    info->uid = ds.msg_perm.uid;
    info->last_send_pid = ds.msg_lspid;
    info->last_receive_pid = ds.msg_lrpid;
    info->change_time = (long)ds.msg_ctime;
    info->creator_uid = ds.msg_perm.cuid;
    return 0;
}

/// Sets a queue's capacity in bytes (raising it above `msgmnb` needs CAP_SYS_RESOURCE).
/// Why C: IPC_SET is a read-modify-write of `struct msqid_ds`.
static inline int csysv_msgctl_set_max_bytes(int qid, unsigned long max_bytes) {
    struct msqid_ds ds;
    if (msgctl(qid, IPC_STAT, &ds) < 0) return -1;
    ds.msg_qbytes = max_bytes;
    return msgctl(qid, IPC_SET, &ds);
}

/// Gives a queue to another owner (workers that run as another user); the creator stays.
/// Why C: IPC_SET is a read-modify-write of `struct msqid_ds`.
static inline int csysv_msgctl_set_owner(int qid, uid_t uid, gid_t gid) {
    struct msqid_ds ds;
    if (msgctl(qid, IPC_STAT, &ds) < 0) return -1;
    ds.msg_perm.uid = uid;
    ds.msg_perm.gid = gid;
    return msgctl(qid, IPC_SET, &ds);
}

/// Removes a queue; blocked readers and writers wake with EIDRM.
/// Why C: `msgctl` takes a struct pointer we do not need here; keeps the call one line in Swift.
static inline int csysv_msgctl_remove(int qid) { return msgctl(qid, IPC_RMID, NULL); }

// MARK: - Signals

// State shared between the async-signal handler and the event loop. `weak` so every object file
// that includes this header (Swift emits one per source file) links to one copy, not one each.
__attribute__((weak)) volatile sig_atomic_t csysv_signal_counts[_NSIG] = {0};
__attribute__((weak)) volatile sig_atomic_t csysv_signal_wake_fd = -1;

/// The handler itself: count the signal and ring the wake fd (an eventfd or pipe the loop polls).
/// Why C: only async-signal-safe code may run here; Swift gives no such guarantee.
static void csysv_signal_handler(int signo) {
    int saved = errno;
    if (signo > 0 && signo < _NSIG) __atomic_add_fetch(&csysv_signal_counts[signo], 1, __ATOMIC_SEQ_CST);
    int fd = csysv_signal_wake_fd;
    if (fd >= 0) {
        uint64_t one = 1;
        ssize_t ignored = write(fd, &one, sizeof one);
        (void)ignored;
    }
    errno = saved;
}

/// Sets the fd the handler rings (non-blocking; 8-byte writes, so an eventfd or a pipe).
/// Why C: the handler's state lives in C.
static inline void csysv_signal_set_wake_fd(int fd) { csysv_signal_wake_fd = fd; }

/// Installs `handler` (or, if given, the SA_SIGINFO `info_handler`) for `signo`, with SA_RESTART
/// and every signal blocked while it runs: the one shape of all the pool's handlers.
/// Why C: `struct sigaction` has a union member and flags Swift imports awkwardly.
static inline int csysv_install_handler(int signo, void (*handler)(int),
                                        void (*info_handler)(int, siginfo_t *, void *)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    if (info_handler) sa.sa_sigaction = info_handler; else sa.sa_handler = handler;
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | (info_handler ? SA_SIGINFO : 0);
    return sigaction(signo, &sa, NULL);
}

/// Installs the counting handler for `signo`.
static inline int csysv_signal_install(int signo) { return csysv_install_handler(signo, csysv_signal_handler, NULL); }

/// The counting handler for signals that are commands only when a process sends them: the kernel
/// sends SIGTTIN/SIGTTOU to a whole background process group when any member reads or (with
/// `stty tostop`) writes its terminal, and those are not an operator's scale up/down.
/// Why C: only async-signal-safe code may run here, and siginfo_t is a union.
static void csysv_signal_handler_if_sent(int signo, siginfo_t *info, void *context) {
    (void)context;
    // kill/sigqueue/tgkill give SI_USER (0) or a negative code; the kernel SI_KERNEL or a positive one.
    if (info != NULL && info->si_code > 0) return;
    csysv_signal_handler(signo);
}

/// Installs `csysv_signal_handler_if_sent` for `signo`.
static inline int csysv_signal_install_if_sent(int signo) {
    return csysv_install_handler(signo, NULL, csysv_signal_handler_if_sent);
}

// A worker's log file, reopened by its SIGUSR1 handler itself: a worker waits for messages in
// msgrcv, which has no signal-mask argument (as pselect has), so a signal counted just before it
// blocks would not be seen until the next message. The open runs in the handler instead.
__attribute__((weak)) char csysv_log_reopen_path[4096] = {0};
__attribute__((weak)) volatile sig_atomic_t csysv_log_reopen_flags = 0;
__attribute__((weak)) volatile sig_atomic_t csysv_log_reopen_checked = 0;

/// Writes `value` in decimal at `buffer + at` (at most 10 digits); returns the new end.
/// Why C: for a signal handler, where printf may not run.
static inline size_t csysv_append_decimal(char *buffer, size_t at, unsigned value) {
    char digits[10];
    int count = 0;
    do { digits[count++] = (char)('0' + value % 10); value /= 10; } while (value && count < 10);
    while (count) buffer[at++] = digits[--count];
    return at;
}

/// Opens the recorded log path and puts it on descriptor 2; 0, or the errno that stopped it
/// (EPERM: not a FIFO, device or single-link regular file where that is checked). Only
/// async-signal-safe calls. Why C: it runs in a signal handler.
static inline int csysv_log_reopen(void) {
    int fd = open(csysv_log_reopen_path, csysv_log_reopen_flags, 0640);
    if (fd < 0) return errno;
    if (csysv_log_reopen_checked) {
        struct stat st;
        int kind = fstat(fd, &st) == 0 ? (int)(st.st_mode & S_IFMT) : 0;
        if (!(kind == S_IFIFO || kind == S_IFCHR || (kind == S_IFREG && st.st_nlink == 1))) {
            close(fd);
            return EPERM;
        }
    }
    // O_NONBLOCK was for the open only (a FIFO without a reader fails instead of waiting); the
    // description is the worker's, whose writes wait.
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) { int e = errno; close(fd); return e; }
    if (fd == 2) return fcntl(2, F_SETFD, 0) < 0 ? errno : 0;
    int rc = dup2(fd, 2) < 0 ? errno : 0;
    close(fd);
    return rc;
}

/// The worker's SIGUSR1 handler: reopen now; a failure is said on the descriptor kept.
/// Why C: only async-signal-safe code may run here.
static void csysv_log_reopen_handler(int signo) {
    (void)signo;
    int saved = errno;
    int error = csysv_log_reopen_path[0] ? csysv_log_reopen() : 0;
    if (error) {
        // "PID: cannot reopen ... (errno N)\n", built without printf (not async-signal-safe).
        static const char text[] = ": cannot reopen the log file; still writing to the one opened before (errno ";
        char line[sizeof text + 32];
        size_t n = csysv_append_decimal(line, 0, (unsigned)getpid());
        memcpy(line + n, text, sizeof text - 1);
        n += sizeof text - 1;
        n = csysv_append_decimal(line, n, (unsigned)error);
        line[n++] = ')';
        line[n++] = '\n';
        ssize_t ignored = write(2, line, n);
        (void)ignored;
    }
    errno = saved;
}

/// Records the log path and open flags, then installs `csysv_log_reopen_handler` for SIGUSR1.
/// `checked`: accept only a FIFO, a device or a single-link regular file. -1 with ENAMETOOLONG
/// if the path does not fit. Why C: the handler's state lives in C.
static inline int csysv_log_reopen_install(const char *path, int flags, int checked) {
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof csysv_log_reopen_path) { errno = ENAMETOOLONG; return -1; }
    memcpy(csysv_log_reopen_path, path, n + 1);
    csysv_log_reopen_flags = flags;
    csysv_log_reopen_checked = checked;
    return csysv_install_handler(SIGUSR1, csysv_log_reopen_handler, NULL);
}

/// Sets `signo` to SIG_IGN. Why C: SIG_IGN is a macro cast of a function pointer.
static inline int csysv_signal_ignore(int signo) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    return sigaction(signo, &sa, NULL);
}

/// Sets `signo` to SIG_DFL (e.g. undo an inherited SIG_IGN for SIGCHLD, which would auto-reap).
/// Why C: SIG_DFL is a macro cast of a function pointer.
static inline int csysv_signal_default(int signo) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    return sigaction(signo, &sa, NULL);
}

/// Returns how many times `signo` arrived since the last call, and resets the count.
/// Why C: an atomic exchange on state the handler writes.
static inline int csysv_signal_take(int signo) {
    if (signo <= 0 || signo >= _NSIG) return 0;
    return __atomic_exchange_n(&csysv_signal_counts[signo], 0, __ATOMIC_SEQ_CST);
}

/// Returns how many times `signo` arrived since the last `csysv_signal_take`, leaving the count.
/// Why C: an atomic load of state the handler writes.
static inline int csysv_signal_peek(int signo) {
    if (signo <= 0 || signo >= _NSIG) return 0;
    return __atomic_load_n(&csysv_signal_counts[signo], __ATOMIC_SEQ_CST);
}

/// Unblocks every signal in the calling thread (a process may inherit a blocked mask).
/// Why C: sigset_t manipulation is macro-heavy.
static inline int csysv_signal_unblock_all(void) {
    sigset_t none;
    sigemptyset(&none);
    return pthread_sigmask(SIG_SETMASK, &none, NULL);
}

/// Unblocks one signal (a forked worker's SIGTERM, once its handler is in place).
/// Why C: sigset_t is manipulated through macros.
static inline int csysv_signal_unblock(int signo) {
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
    return pthread_sigmask(SIG_UNBLOCK, &one, NULL);
}

/// Writes with `signo` blocked, then restores the mask; errno is the write's. For the master's
/// log on a terminal: a background process writing to its terminal with `stty tostop` gets SIGTTOU
/// and EINTR-restarts forever while it has a handler for it (the master's scales down); blocked,
/// the kernel lets the write through, and a SIGTTOU sent meanwhile stays pending.
/// Why C: sigset_t is manipulated through macros, and errno must outlive the mask restore.
static inline ssize_t csysv_write_holding_signal(int fd, const void *buffer, size_t count, int signo) {
    sigset_t one, old;
    sigemptyset(&one);
    sigaddset(&one, signo);
    pthread_sigmask(SIG_BLOCK, &one, &old);
    ssize_t n = write(fd, buffer, count);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return n;
}

// MARK: - Processes

/// Asks the kernel to send `signo` to the caller when its parent thread dies.
/// Why C: prctl is variadic.
static inline int csysv_set_parent_death_signal(int signo) { return prctl(PR_SET_PDEATHSIG, signo, 0, 0, 0); }

/// Options for `csysv_fork`.
enum {
    /// Child ignores the signals meant for the master only: SIGINT and SIGHUP (a terminal sends them
    /// to the whole process group), SIGTTIN/SIGTTOU (sent to the group, they would stop workers),
    /// SIGPIPE, and SIGUSR1 until the worker installs its log-reopen handler (its default action
    /// would kill a worker forked a moment before the master forwards a reopen).
    CSYSV_FORK_IGNORE_GROUP_SIGNALS = 1 << 0,
    /// Child keeps SIGTERM blocked: a SIGTERM sent right after the fork (retiring the worker
    /// while it starts) stays pending until the child has installed its handler and unblocks it,
    /// instead of killing it with the default action.
    CSYSV_FORK_HOLD_SIGTERM = 1 << 1,
};

/// Forks with every signal blocked across the fork, so no handler of the parent runs in the child
/// before its dispositions are reset. In the child: all dispositions back to SIG_DFL, optionally
/// the master's signals ignored (CSYSV_FORK_IGNORE_GROUP_SIGNALS), `PR_SET_PDEATHSIG(pdeathsig)` (0 = none) followed by a `getppid()` check for a
/// parent that died before prctl took effect (the child then `_exit(70)`s), and an empty mask.
/// Returns as fork(2).
/// Why C: the window between fork and the child's reset must run no Swift code and no handler.
static inline pid_t csysv_fork(int pdeathsig, int options) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        for (int s = 1; s < _NSIG; s++) {
            if (s == SIGKILL || s == SIGSTOP) continue;
            sigaction(s, &sa, NULL); // fails harmlessly for the glibc-reserved RT signals
        }
        if (options & CSYSV_FORK_IGNORE_GROUP_SIGNALS) {
            sa.sa_handler = SIG_IGN;
            const int ignored[] = {SIGINT, SIGHUP, SIGTTIN, SIGTTOU, SIGPIPE, SIGUSR1};
            for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) sigaction(ignored[i], &sa, NULL);
        }
        csysv_signal_wake_fd = -1;
        // Counts of signals the parent had not yet taken are the parent's, not the child's.
        for (int s = 0; s < _NSIG; s++) csysv_signal_counts[s] = 0;
        if (pdeathsig > 0) {
            if (csysv_set_parent_death_signal(pdeathsig) < 0) _exit(70);
            if (getppid() != parent) _exit(70);
        }
        sigset_t mask;
        sigemptyset(&mask);
        if (options & CSYSV_FORK_HOLD_SIGTERM) sigaddset(&mask, SIGTERM);
        pthread_sigmask(SIG_SETMASK, &mask, NULL);
        return 0;
    }
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return pid;
}

/// Ends the calling process at once with `status`: no atexit handlers, no stdio flush.
/// Why C: `_exit` is declared `noreturn` and Swift's import of it is fine, but keeping it beside
/// fork documents that workers never run atexit handlers or the master's cleanup.
static inline void csysv_exit_now(int status) { _exit(status); }

/// Reaps without blocking. Returns the pid, 0 if none is ready, -1 with errno (ECHILD: no children).
/// Why C: keeps WNOHANG (a macro) and the status out-parameter in one place.
static inline pid_t csysv_waitpid_nohang(pid_t pid, int *status) { return waitpid(pid, status, WNOHANG); }

/// Nonzero if the wait status is of a child that exited normally (`WIFEXITED`).
/// Why C: each wait-status test is a macro (W*), which Swift cannot call.
static inline int csysv_wifexited(int status) { return WIFEXITED(status); }
/// The exit status, 0…255, of a child that exited normally (`WEXITSTATUS`). Why C: a macro.
static inline int csysv_wexitstatus(int status) { return WEXITSTATUS(status); }
/// Nonzero if the child was killed by a signal (`WIFSIGNALED`). Why C: a macro.
static inline int csysv_wifsignaled(int status) { return WIFSIGNALED(status); }
/// The signal number that killed the child (`WTERMSIG`). Why C: a macro.
static inline int csysv_wtermsig(int status) { return WTERMSIG(status); }
/// Nonzero if the killed child dumped core (`WCOREDUMP`). Why C: a macro.
static inline int csysv_wcoredump(int status) { return WCOREDUMP(status); }


/// `SCHED_BATCH` from <sched.h>, which declares it only under _GNU_SOURCE (Linux ABI value 3).
#ifndef SCHED_BATCH
#define SCHED_BATCH 3
#endif

/// Puts the calling process under SCHED_BATCH (nonzero `batch`) or SCHED_OTHER. A batch task gets
/// its full share of CPU but does not preempt a running task when it wakes up.
/// Why C: the policy constant is hidden behind _GNU_SOURCE, which this header does not set.
static inline int csysv_set_batch_scheduling(int batch) {
    struct sched_param param = { .sched_priority = 0 };
    return sched_setscheduler(0, batch ? SCHED_BATCH : SCHED_OTHER, &param);
}

/// The calling process's scheduling policy (SCHED_OTHER 0, SCHED_BATCH 3, ...).
/// Why C: beside its setter, whose constant only this header knows.
static inline int csysv_scheduling_policy(void) { return sched_getscheduler(0); }

/// Names the process for `ps`/`top` (at most 15 bytes). Why C: prctl is variadic.
static inline int csysv_set_process_name(const char *name) { return prctl(PR_SET_NAME, name, 0, 0, 0); }

/// `close_range(2)`'s number: <sys/syscall.h> has it, but glibc declares the wrapper only under
/// _GNU_SOURCE. 436 on every architecture (the syscall is newer than the table split).
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

/// A record of getdents64(2) as the kernel writes it (glibc declares `struct dirent64` only
/// under _LARGEFILE64_SOURCE, with a fixed-size name this reads past).
typedef struct csysv_dirent64 {
    uint64_t ino;
    int64_t offset;
    unsigned short length;
    unsigned char type;
    char name[];
} csysv_dirent64;
_Static_assert(offsetof(csysv_dirent64, length) == 16 && offsetof(csysv_dirent64, name) == 19,
               "csysv_dirent64 must match the kernel's struct linux_dirent64");

/// Calls `visit` with each entry name of the open directory `dir`, read from where it stands with
/// raw getdents64 into a stack buffer (opendir would allocate: this runs between fork and a
/// worker's start too). Returns 0, or -1 with errno.
/// Why C: the record walk of getdents64, shared by the two directory readers below.
static inline int csysv_each_dirent(int dir, void (*visit)(const char *name, void *context), void *context) {
    _Alignas(8) char buffer[4096];
    for (;;) {
        long n = syscall(SYS_getdents64, dir, buffer, sizeof buffer);
        if (n < 0) return -1;
        if (n == 0) return 0;
        for (long at = 0; at < n;) {
            const csysv_dirent64 *entry = (const csysv_dirent64 *)(buffer + at);
            at += entry->length;
            visit(entry->name, context);
        }
    }
}

/// `csysv_close_listed_fds`' range, and the directory's own descriptor to spare.
typedef struct csysv_fd_range { unsigned long first, last; int dir; } csysv_fd_range;

static inline void csysv_close_if_in_range(const char *name, void *context) {
    const csysv_fd_range *range = (const csysv_fd_range *)context;
    if (*name < '0' || *name > '9') return;   // "." and ".."
    unsigned long fd = 0;
    for (; *name >= '0' && *name <= '9' && fd <= 0xffffffffu; name++) fd = fd * 10 + (unsigned long)(*name - '0');
    if (fd >= range->first && fd <= range->last && fd != (unsigned long)range->dir) close((int)fd);
}

/// Closes the open fds in [first, last] that /proc/self/fd lists. Returns 0, or -1 with errno
/// (no /proc, no descriptor free to open it: some may be closed by then).
/// Why C: close_range's fallback, run between fork and the worker's start. The kernel lists the
/// directory by fd number, so closing listed ones while reading skips none.
static inline int csysv_close_listed_fds(unsigned int first, unsigned int last) {
    int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return -1;
    csysv_fd_range range = { first, last, dir };
    int result = csysv_each_dirent(dir, csysv_close_if_in_range, &range);
    int saved = errno;
    close(dir);
    errno = saved;
    return result;
}

/// Closes the fds in [first, last]. Where close_range fails, closes the ones /proc/self/fd lists;
/// where that fails too (no /proc, or no descriptor free to list it: a master at its limit),
/// one close(2) each up to RLIMIT_NOFILE's soft limit (at most 2^20). Returns 0, or -1 with errno.
/// (Not one close each up to the hard limit: often 2^19 or 2^20 where the fallbacks run, a
/// million closes a fork. Only a descriptor opened before the soft limit was lowered, in a process
/// without /proc, would survive.)
static inline int csysv_close_fd_range(unsigned int first, unsigned int last) {
    if (first > last) return 0;
    // Any failure (ENOSYS before 5.9, EPERM from a seccomp filter that denies syscalls it does
    // not know): the flags are 0 and first <= last, so the fallbacks below do the same job.
    if (syscall(SYS_close_range, first, last, 0) == 0) return 0;
    if (csysv_close_listed_fds(first, last) == 0) return 0;
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) < 0) return -1;
    unsigned long top = limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur > (1ul << 20) ? (1ul << 20) : limit.rlim_cur;
    for (unsigned long fd = first; fd <= last && fd < top; fd++) close((int)fd);
    return 0;
}

/// Closes every fd from 3 up, except the `count` fds in `keep` (any order, at most 64).
/// Why C: runs right after fork in a respawned worker, which must not hold clients' sockets open.
/// It needs no free descriptor (close_range, or as a last resort one close each), because a master
/// at its descriptor limit still respawns workers, and a child of it has none free either.
static inline int csysv_close_fds_except(const int *keep, int count) {
    if (count < 0 || count > 64) { errno = EINVAL; return -1; }
    int sorted[64];
    for (int i = 0; i < count; i++) {
        int value = keep[i], j = i;
        for (; j > 0 && sorted[j - 1] > value; j--) sorted[j] = sorted[j - 1];
        sorted[j] = value;
    }
    unsigned int next = 3;
    for (int i = 0; i < count; i++) {
        if (sorted[i] < (int)next) continue;   // below 3, or a duplicate
        if (csysv_close_fd_range(next, (unsigned int)sorted[i] - 1) < 0) return -1;
        next = (unsigned int)sorted[i] + 1;
    }
    return csysv_close_fd_range(next, ~0u);
}

static inline void csysv_count_if_not_dot(const char *name, void *context) {
    if (name[0] != '.') ++*(int *)context;
}

/// Number of threads listed in `dir`, an open /proc/self/task, read again from its start; -1 with
/// errno. Why C: the debug single-thread check before each fork; a directory kept open needs no
/// free descriptor (a master at its fd limit still respawns workers).
static inline int csysv_thread_count_in(int dir) {
    if (lseek(dir, 0, SEEK_SET) < 0) return -1;
    int n = 0;
    return csysv_each_dirent(dir, csysv_count_if_not_dot, &n) == 0 ? n : -1;
}

/// Number of threads in the calling process (from /proc/self/task), -2 when it cannot be counted
/// because the process has no descriptor free (EMFILE/ENFILE), or -1.
/// Why C: opens the directory for `csysv_thread_count_in`.
static inline int csysv_thread_count(void) {
    int dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return errno == EMFILE || errno == ENFILE ? -2 : -1;
    int n = csysv_thread_count_in(dir);
    close(dir);
    return n;
}

// MARK: - File descriptors and sockets

/// Turns `O_NONBLOCK` on (`on` nonzero) or off for `fd`. Returns 0, or -1 with errno.
/// Why C: fcntl is variadic.
static inline int csysv_set_nonblocking(int fd, int on) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, flags);
}

/// Turns `FD_CLOEXEC` on (`on` nonzero) or off for `fd`. Returns 0, or -1 with errno.
/// Why C: fcntl is variadic.
static inline int csysv_set_cloexec(int fd, int on) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) return -1;
    flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    return fcntl(fd, F_SETFD, flags);
}

/// Renames `from` to `to` unless `to` exists (-1 with EEXIST then). Why C: glibc declares
/// renameat2 only under _GNU_SOURCE; its syscall is called directly, and where a file system
/// refuses the flag (EINVAL), link then unlink does the same (link fails on an existing name).
static inline int csysv_rename_noreplace(const char *from, const char *to) {
    if (syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, 1u /* RENAME_NOREPLACE */) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return -1;
    if (link(from, to) != 0) return -1;
    unlink(from);
    return 0;
}

/// `open` with a creation mode. Why C: open is variadic (the mode comes only with O_CREAT).
static inline int csysv_open_creating(const char *path, int flags, mode_t mode) { return open(path, flags, mode); }

/// Why C: fcntl is variadic. Returns 1 if `fd` is open, 0 if not.
static inline int csysv_fd_is_open(int fd) { return fcntl(fd, F_GETFD) >= 0 || errno != EBADF; }

/// Why C: Swift resolves `flock` to `struct flock` (fcntl's lock record), not to the call.
/// Exclusive and non-blocking: the caller polls, with its own time limit.
static inline int csysv_flock_exclusive_nowait(int fd) { return flock(fd, LOCK_EX | LOCK_NB); }

/// Largest path `sun_path` holds, excluding the terminating NUL.
/// Why C: `sizeof` of a struct member.
static inline size_t csysv_sun_path_max(void) { return sizeof(((struct sockaddr_un *)0)->sun_path) - 1; }

/// Fills a `sockaddr_un` for `path`; -1 with ENAMETOOLONG if it does not fit.
/// Why C: Swift imports `sun_path` as a 108-tuple.
static inline int csysv_sockaddr_un(const char *path, struct sockaddr_un *addr, socklen_t *length) {
    size_t n = strlen(path);
    if (n == 0 || n > csysv_sun_path_max()) { errno = ENAMETOOLONG; return -1; }
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    memcpy(addr->sun_path, path, n);
    *length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

/// Binds `fd` to the Unix path. Why C: the sockaddr cast dance.
static inline int csysv_bind_unix(int fd, const char *path) {
    struct sockaddr_un addr;
    socklen_t length;
    if (csysv_sockaddr_un(path, &addr, &length) < 0) return -1;
    return bind(fd, (struct sockaddr *)&addr, length);
}

/// Connects `fd` to the Unix path. Why C: the sockaddr cast dance.
static inline int csysv_connect_unix(int fd, const char *path) {
    struct sockaddr_un addr;
    socklen_t length;
    if (csysv_sockaddr_un(path, &addr, &length) < 0) return -1;
    return connect(fd, (struct sockaddr *)&addr, length);
}

// Declared by glibc only under _GNU_SOURCE (see the top of this file); same prototype.
/// glibc's accept4(2), used by `csysv_accept`.
extern int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);

/// Accepts a connection as non-blocking and close-on-exec; the peer address is not needed.
/// Why C: with _GNU_SOURCE glibc declares the address argument as a transparent union.
static inline int csysv_accept(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

/// `struct ucred` as SO_PEERCRED fills it (glibc declares it only under _GNU_SOURCE).
typedef struct csysv_ucred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
} csysv_ucred;
_Static_assert(sizeof(csysv_ucred) == 12 && offsetof(csysv_ucred, uid) == 4 && offsetof(csysv_ucred, gid) == 8,
               "csysv_ucred must match the kernel's struct ucred");
#ifdef __USE_GNU   // compiled by scripts/smoke.sh with -D_GNU_SOURCE (the module cannot set it)
_Static_assert(sizeof(struct ucred) == sizeof(csysv_ucred), "csysv_ucred must match struct ucred");
#endif

/// The peer's credentials of a connected Unix socket.
/// Why C: the option fills a struct Swift's Glibc import does not declare.
static inline int csysv_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid) {
    csysv_ucred cred;
    socklen_t length = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) < 0) return -1;
    if (pid) *pid = cred.pid;
    if (uid) *uid = cred.uid;
    if (gid) *gid = cred.gid;
    return 0;
}

// MARK: - systemd

/// sd_is_socket_unix's checks for an inherited descriptor: 1 if `fd` is a listening AF_UNIX
/// stream socket (its bound path, NUL-terminated and empty if unnamed or abstract, in `path`),
/// 0 if it is something else (a file, a pipe: ENOTSOCK), -1 with errno if it cannot be asked (EBADF).
/// Why C: three getsockopt calls on ints and a sockaddr_un whose sun_path Swift sees as a tuple.
static inline int csysv_listening_unix_stream(int fd, char *path, size_t capacity) {
    int value = 0;
    socklen_t length = sizeof value;
    if (capacity == 0) { errno = EINVAL; return -1; }
    path[0] = '\0';
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &value, &length) < 0) return errno == ENOTSOCK ? 0 : -1;
    if (value != AF_UNIX) return 0;
    length = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &length) < 0) return -1;
    if (value != SOCK_STREAM) return 0;
    length = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &length) < 0) return -1;
    if (!value) return 0;
    struct sockaddr_un addr;
    socklen_t addrlen = sizeof addr;
    memset(&addr, 0, sizeof addr);
    if (getsockname(fd, (struct sockaddr *)&addr, &addrlen) < 0) return -1;
    size_t offset = offsetof(struct sockaddr_un, sun_path);
    if (addrlen > offset && addr.sun_path[0] != '\0') {
        // sun_path need not be terminated when it fills the field: bound the copy by both.
        size_t n = strnlen(addr.sun_path, addrlen - offset);
        if (n >= capacity) n = capacity - 1;
        memcpy(path, addr.sun_path, n);
        path[n] = '\0';
    }
    return 1;
}

/// Sends one datagram to a NOTIFY_SOCKET path ("@name" = abstract namespace). Returns 0 or -1.
/// Why C: an abstract address is a sun_path starting with NUL, and its length must be exact.
/// `fd`: a datagram socket kept for the purpose, or -1 to open one for this message only.
static inline int csysv_notify_socket_send(int fd, const char *path, const void *message, size_t length) {
    size_t n = strlen(path);
    struct sockaddr_un addr;
    if (n == 0 || n > sizeof addr.sun_path) { errno = EINVAL; return -1; }
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, n);
    if (path[0] == '@') addr.sun_path[0] = 0;
    socklen_t addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '@' ? 0 : 1));
    if (addrlen > sizeof addr) addrlen = sizeof addr;
    int own = fd < 0;
    if (own) fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    // MSG_DONTWAIT: the master never blocks; a receiver whose queue is full loses a status line.
    ssize_t sent = sendto(fd, message, length, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&addr, addrlen);
    int saved = errno;
    if (own) close(fd);
    errno = saved;
    return sent == (ssize_t)length ? 0 : -1;
}

// MARK: - Scoreboard

/// One worker's public state, in a MAP_SHARED page the master maps before forking. The worker
/// writes, the master reads; each field is accessed atomically.
typedef struct csysv_slot {
    int32_t pid;
    uint32_t state;      ///< CSYSV_SLOT_*
    uint64_t job;        ///< id of the job being handled (valid while state == BUSY)
    int64_t started_ns;  ///< CLOCK_MONOTONIC at the job's start
    uint64_t jobs;       ///< jobs completed by the current process in this slot
    int64_t average_ns;  ///< moving average (1/8 weight) of its job durations, for batch sizing
    uint64_t reserved[3];///< pads the slot to one cache line: workers do not share lines
} csysv_slot;

enum { CSYSV_SLOT_EMPTY = 0, CSYSV_SLOT_IDLE = 1, CSYSV_SLOT_BUSY = 2 };

_Static_assert(sizeof(csysv_slot) == 64, "csysv_slot layout is shared between processes");

/// Worker, before running the handler: busy with `job` since `now_ns` (CLOCK_MONOTONIC nanoseconds).
/// The state is stored last with release ordering, so a reader that sees BUSY sees this job.
/// Why C: Swift has no atomics on raw shared memory without a package; these are C11 builtins.
static inline void csysv_slot_begin(csysv_slot *s, uint64_t job, int64_t now_ns) {
    // The start before the id: a reader that sees the same id before and after reading the start
    // (csysv_slot_job, csysv_slot_started_ns, csysv_slot_job) has that job's start or a later one.
    __atomic_store_n(&s->started_ns, now_ns, __ATOMIC_RELEASE);
    __atomic_store_n(&s->job, job, __ATOMIC_RELEASE);
    __atomic_store_n(&s->state, CSYSV_SLOT_BUSY, __ATOMIC_RELEASE);
}
/// Worker, after the job (and its reply, if any): counts one more job done and marks the slot idle.
/// Why C: C11 atomic builtins, as above.
/// `now_ns` is the job's end; its duration moves the slot's average by 1/8 (the first one sets it;
/// a duration is at least 1 ns, so 0 means "no job done yet").
static inline void csysv_slot_end(csysv_slot *s, int64_t now_ns) {
    int64_t took = now_ns - __atomic_load_n(&s->started_ns, __ATOMIC_RELAXED);
    if (took < 1) took = 1;
    int64_t average = __atomic_load_n(&s->average_ns, __ATOMIC_RELAXED);
    __atomic_store_n(&s->average_ns, average == 0 ? took : average + (took - average) / 8, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s->jobs, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&s->state, CSYSV_SLOT_IDLE, __ATOMIC_RELEASE);
}
/// Publishes the pid of the process that now owns the slot (the worker does, first thing).
/// Why C: an atomic store on shared memory.
static inline void csysv_slot_set_pid(csysv_slot *s, int32_t pid) { __atomic_store_n(&s->pid, pid, __ATOMIC_RELEASE); }
/// The pid that owns the slot, loaded with acquire ordering. Why C: C11 atomic builtin.
static inline int32_t csysv_slot_pid(const csysv_slot *s) { return __atomic_load_n(&s->pid, __ATOMIC_ACQUIRE); }
/// Master, when process `pid` takes the slot: no jobs counted, no job, idle.
/// Why C: C11 atomic builtins, as above.
static inline void csysv_slot_reset(csysv_slot *s, int32_t pid) {
    __atomic_store_n(&s->pid, pid, __ATOMIC_RELAXED);
    __atomic_store_n(&s->jobs, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->job, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->average_ns, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->state, CSYSV_SLOT_IDLE, __ATOMIC_RELEASE);
}
/// The slot's state (CSYSV_SLOT_*), loaded with acquire ordering. Why C: C11 atomic builtin.
static inline uint32_t csysv_slot_state(const csysv_slot *s) { return __atomic_load_n(&s->state, __ATOMIC_ACQUIRE); }
/// Id of the job being handled (valid while the state is BUSY). Why C: C11 atomic builtin.
static inline uint64_t csysv_slot_job(const csysv_slot *s) { return __atomic_load_n(&s->job, __ATOMIC_ACQUIRE); }
/// CLOCK_MONOTONIC time of the current job's start, in nanoseconds. Why C: C11 atomic builtin.
static inline int64_t csysv_slot_started_ns(const csysv_slot *s) { return __atomic_load_n(&s->started_ns, __ATOMIC_ACQUIRE); }
/// Jobs completed by the slot's current process. Why C: C11 atomic builtin.
static inline uint64_t csysv_slot_jobs(const csysv_slot *s) { return __atomic_load_n(&s->jobs, __ATOMIC_RELAXED); }
/// Moving average of the slot's job durations, in nanoseconds. Why C: C11 atomic builtin.
static inline int64_t csysv_slot_average_ns(const csysv_slot *s) { return __atomic_load_n(&s->average_ns, __ATOMIC_RELAXED); }

// MARK: - Doorbell hint

/// Whether the master may be asleep in epoll_wait, shared with the workers so that they ring the
/// doorbell (an eventfd write and a wake-up) only when it may be needed. A Dekker pair: the master
/// stores "asleep" and then looks at the reply queue; a worker sends its reply and then loads the
/// flag. With a full fence on each side, at least one of them sees the other: either the master
/// finds the reply, or the worker rings.
typedef struct csysv_master_hint {
    uint32_t asleep;
    /// Ack mode: clients wait for queue room (jobs held in the master). The same pair: the master
    /// stores it and then tries to send; a worker takes a message and then loads it.
    uint32_t wants_room;
    uint32_t reserved[14];  ///< a cache line of its own
} csysv_master_hint;

_Static_assert(sizeof(csysv_master_hint) == 64, "csysv_master_hint layout is shared between processes");

/// Sets a flag of the hint (`asleep`: the master is about to look at the reply queue and then
/// sleep; `wants_room`: it is about to retry held jobs and then sleep), the writing half of the
/// pair. Why C: a sequentially consistent store and fence on shared memory.
static inline void csysv_hint_flag_set(uint32_t *flag, uint32_t value) {
    __atomic_store_n(flag, value, __ATOMIC_SEQ_CST);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
/// Reads a flag of the hint after a worker's own step (a reply sent, a message taken): whether it
/// must ring. Why C: a fence and an atomic load.
static inline uint32_t csysv_hint_flag_get(const uint32_t *flag) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return __atomic_load_n(flag, __ATOMIC_SEQ_CST);
}

/// Keeps a worker's plain stores to its inbox in program order: the master reads them after the
/// worker died, possibly between two of them (a kill lands between instructions, so only the
/// compiler could reorder them). Why C: Swift has no compiler fence.
static inline void csysv_compiler_fence(void) {
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

// MARK: - Payload arena

/// A worker is done reading a spilled payload: it publishes the chunk's generation, and the
/// master may reuse the chunk once it loads that value. Release ordering keeps the worker's reads
/// of the chunk before the store. Why C: an atomic store on shared memory.
static inline void csysv_arena_release(uint32_t *released, uint32_t generation) {
    __atomic_store_n(released, generation, __ATOMIC_RELEASE);
}
/// The generation a worker last released for a chunk; acquire ordering keeps the master's next
/// writes into the chunk after the worker's reads. Why C: an atomic load on shared memory.
static inline uint32_t csysv_arena_released(const uint32_t *released) {
    return __atomic_load_n(released, __ATOMIC_ACQUIRE);
}

/// A reply ring's position (bytes written by the worker, or taken by the master), published to the
/// other side with release ordering: the bytes before it are written (or no longer read).
/// Why C: an atomic store on shared memory.
static inline void csysv_ring_publish(uint64_t *position, uint64_t value) {
    __atomic_store_n(position, value, __ATOMIC_RELEASE);
}
/// The other side's published position, with acquire ordering. Why C: an atomic load on shared memory.
static inline uint64_t csysv_ring_position(const uint64_t *position) {
    return __atomic_load_n(position, __ATOMIC_ACQUIRE);
}

#endif
