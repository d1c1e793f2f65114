module github.com/netpulse/netpulse/services/detector

go 1.26

require github.com/netpulse/netpulse/lib v0.0.0

replace github.com/netpulse/netpulse/lib => ../../lib
