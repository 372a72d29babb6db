import Testing
import CSysV
@Test func probe() { #expect(csysv_msg_header_size() == 8) }
