package api

// The reportingController of the Events each binary writes (events.k8s.io/v1;
// kubectl shows it as reportingComponent). Each Event's reportingInstance
// is the controller replica's identity or the speaker's node name.
const (
	ReportingController = "ironlb.io/controller"
	ReportingSpeaker    = "ironlb.io/speaker"
)
