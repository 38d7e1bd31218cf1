@_exported import SwitchTypes
