import LinuxNet
import SwitchCore

/// The device-layer boundary for errors: what LinuxNet (or any ``DeviceLayer``) reports becomes a
/// ``SwitchError`` whose code says what it means, so the daemon and the client act on the code.
extension SwitchError {
    /// `message: cause`, coded from the cause: a ``DeviceError``'s ``DeviceFailure``, a
    /// ``SwitchError``'s own code, else ``SwitchError/Code/system``. The cause is kept for logs.
    init(_ message: String, cause: any Error) {
        let code: Code
        switch cause {
        case let e as SwitchError: code = e.code
        case let e as any DeviceError: code = Self.code(for: e.failure)
        default: code = .system
        }
        self.init(code, "\(message): \(cause)", cause: cause)
    }

    static func code(for failure: DeviceFailure) -> Code {
        switch failure {
        case .exists: .exists
        case .notFound: .notFound
        case .permissionDenied: .permissionDenied
        case .busy: .busy
        case .invalidArgument: .invalidArgument
        case .other: .system
        }
    }
}
