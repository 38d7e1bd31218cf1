import LinuxNet
import Testing

@Suite("InterfaceName validation")
struct InterfaceNameTests {
    @Test("accepts names the kernel and shells both handle", arguments: ["eth0", "vm1-0", "a", "tap.vlan_12", "123456789012345"])
    func accepts(_ name: String) throws {
        #expect(try InterfaceName(name).value == name)
    }

    @Test("rejects bad names with a message naming the input and the rule")
    func rejects() {
        let cases: [(String, String)] = [
            ("", "interface name \"\" is empty"),
            ("1234567890123456", "interface name \"1234567890123456\" is 16 bytes long (at most 15 allowed)"),
            (".", "interface name \".\" is reserved ('.' and '..' are not allowed)"),
            ("..", "interface name \"..\" is reserved ('.' and '..' are not allowed)"),
            ("a/b", "interface name \"a/b\" contains '/' (allowed: letters, digits, '_', '.', '-')"),
            ("a:b", "interface name \"a:b\" contains ':' (allowed: letters, digits, '_', '.', '-')"),
            ("a b", "interface name \"a b\" contains a space (allowed: letters, digits, '_', '.', '-')"),
            ("a\tb", "interface name \"a\tb\" contains a tab (allowed: letters, digits, '_', '.', '-')"),
            ("tëst", "interface name \"tëst\" contains 'ë' (allowed: letters, digits, '_', '.', '-')"),
        ]
        for (input, message) in cases {
            #expect {
                _ = try InterfaceName(input)
            } throws: { error in
                "\(error)" == message
            }
        }
    }

    @Test("finding 9: a name starting with '-' is rejected (tools would read it as an option)")
    func finding9_leadingDash() {
        for input in ["-", "-x", "--help"] {
            #expect {
                _ = try InterfaceName(input)
            } throws: { error in
                "\(error)" == "interface name \"\(input)\" starts with '-' (tools would read it as an option)"
            }
        }
        #expect((try? InterfaceName("a-")) != nil)
    }

    @Test("counts bytes, not characters")
    func byteLength() {
        // 8 characters, 16 bytes in UTF-8: too long before the character check even runs.
        #expect(throws: InterfaceNameError.self) { try InterfaceName("ëëëëëëëë") }
    }

    @Test("SystemError and NetlinkError describe themselves with strerror / nl_geterror text")
    func errorText() {
        let busy = SystemError(operation: "TUNSETIFF", device: "vm1-0", errno: 16)
        #expect(busy.description == "TUNSETIFF on 'vm1-0': Device or resource busy (EBUSY)")
        let exists = NetlinkError(operation: "rtnl_link_add", device: "x", code: -6)  // NLE_EXIST
        #expect(exists.description == "rtnl_link_add on 'x': Object exists (NLE 6)")
    }
}
