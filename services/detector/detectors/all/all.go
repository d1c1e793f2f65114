// Package all links every built-in detector into a binary: import it for its
// side effect (each detector registers itself with detect.Default in init).
//
//	import _ "github.com/netpulse/netpulse/services/detector/detectors/all"
package all

import (
	_ "github.com/netpulse/netpulse/services/detector/detectors/connfailure"
	_ "github.com/netpulse/netpulse/services/detector/detectors/connleak"
	_ "github.com/netpulse/netpulse/services/detector/detectors/dropspike"
	_ "github.com/netpulse/netpulse/services/detector/detectors/listenoverflow"
	_ "github.com/netpulse/netpulse/services/detector/detectors/peernotclosing"
	_ "github.com/netpulse/netpulse/services/detector/detectors/portexhaustion"
	_ "github.com/netpulse/netpulse/services/detector/detectors/retransmitspike"
	_ "github.com/netpulse/netpulse/services/detector/detectors/slowhandshake"
)
