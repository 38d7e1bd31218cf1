/// The version of tapswitch: the one constant both `tapswitchd` and `tapswitchctl` report.
public enum TapswitchVersion {
    public static let current = "0.1.0"
}
