import Foundation

/// One extension's saved state for one NIC: a versioned blob keyed by the extension's name
/// (base64 in the file).
public struct ExtensionNICState: Codable, Sendable, Equatable {
    public var extensionName: String
    public var version: UInt16
    public var data: Data

    public init(extensionName: String, version: UInt16, data: Data) {
        self.extensionName = extensionName
        self.version = version
        self.data = data
    }

    enum CodingKeys: String, CodingKey {
        case extensionName = "extension", version, data
    }
}

/// What `tapswitchctl nic save PORT` writes and `nic restore PORT FILE` reads: one NIC's extension
/// state (NIC save), to move it with a VM to another host or port.
public struct SavedNICDocument: Codable, Sendable, Equatable {
    /// The port it was saved from (for the operator; restore may target another port name).
    public var port: String
    public var nicStates: [ExtensionNICState]

    public init(port: String, nicStates: [ExtensionNICState]) {
        self.port = port
        self.nicStates = nicStates
    }
}
