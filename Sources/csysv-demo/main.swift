// A client of the C shim alone (no Pool): what "another Swift package importing CSysV" looks like.
// It creates a private queue, sends and receives one message, prints what IPC_STAT says, and
// removes the queue. Run: swift run csysv-demo
import CSysV
import Glibc

// `csysv-demo send QID`: try to put one message on an existing queue and report the result (used
// by the security tests to show that another uid cannot write to the pool's 0600 queues).
if CommandLine.arguments.count == 3, CommandLine.arguments[1] == "send", let target = Int32(CommandLine.arguments[2]) {
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: Int(csysv_msg_header_size()) + 8, alignment: 8)
    if csysv_msgsnd(target, buffer, 1, 4, 1) == 0 {
        print("sent")
        exit(0)
    }
    print("msgsnd: \(String(cString: strerror(errno)))")
    exit(1)
}

let qid = csysv_msgget_private(0o600)
guard qid >= 0 else {
    print("msgget: \(String(cString: strerror(errno)))")
    exit(1)
}

/// Removes the queue before failing: `exit` (and `fatalError`) skip top-level `defer`s.
func fail(_ call: String) -> Never {
    let error = errno
    _ = csysv_msgctl_remove(qid)
    print("\(call): \(String(cString: strerror(error)))")
    exit(1)
}

let capacity = 64
let buffer = UnsafeMutableRawPointer.allocate(byteCount: Int(csysv_msg_header_size()) + capacity, alignment: 8)
let text = Array("hello, queue".utf8)
text.withUnsafeBytes { csysv_msg_text(buffer).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
guard csysv_msgsnd(qid, buffer, 1, text.count, 1) == 0 else { fail("msgsnd") }

var info = csysv_msqinfo()
guard csysv_msgctl_stat(qid, &info) == 0 else { fail("msgctl(IPC_STAT)") }
print("queue \(qid): mode \(String(info.mode, radix: 8)), \(info.messages) message(s), \(info.bytes) byte(s), capacity \(info.max_bytes)")

var type = 0
let n = csysv_msgrcv(qid, buffer, capacity, 0, 1, &type)
guard n >= 0 else { fail("msgrcv") }
let received = UnsafeRawBufferPointer(start: csysv_msg_text(buffer), count: n)
print("received type \(type): \(String(decoding: received, as: UTF8.self))")
buffer.deallocate()
guard csysv_msgctl_remove(qid) == 0 else {
    print("msgctl(IPC_RMID): \(String(cString: strerror(errno)))")
    exit(1)
}
