package media

import ()

// Active speaker (media:active_speaker), per call, from the
// ssrc-audio-level header extension (RFC 6464) of its audio producers.
//
// Each audio packet's level (0 dBov loudest, 127 silence) counts as an
// activity of max(0, 70 - level): -70 dBov and quieter is silence
// (speechFloorDBov). The producer's receive hook sums them (stats.go).
//
//   - Every 100 ms the worker takes each audio producer's mean activity
//     since the last sample (0 when no packet came: DTX, paused, muted).
//   - A producer's score is the mean of its last 15 samples (1.5 s).
//   - Every 300 ms the loudest producer whose score is at least 10 (about
//     a steady -60 dBov) becomes the dominant speaker when there is none
//     yet, when the current one has fallen below 10, or when it beats the
//     current one by 30 % plus 3 points (hysteresis: two people talking
//     at once do not make it flap).
//   - Nobody speaking changes nothing: the last dominant speaker stays.
//
// Every change is sent to every participant of the call (at most one every
// 300 ms, the decision interval): media:active_speaker {room_id,
// producer_id, user_id, connection_id}.

const (
	speakerSampleTicks = 2  // worker ticks (50 ms) per level sample: 100 ms
	speakerDecideTicks = 6  // per decision: 300 ms
	speakerWindow      = 15 // samples averaged: 1.5 s
	speakerMinScore    = 10.0
	speakerSwitchRatio = 1.3
	speakerSwitchExtra = 3.0
)

type speakerState struct {
	tracks  map[*producer]*speakerTrack
	current *producer
}

type speakerTrack struct {
	ring [speakerWindow]float64
	next int
	sum  float64
}

func (t *speakerTrack) push(v float64) {
	t.sum += v - t.ring[t.next]
	t.ring[t.next] = v
	t.next = (t.next + 1) % speakerWindow
}

func (t *speakerTrack) score() float64 {
	if t.sum < 0 { // float drift
		t.sum = 0
	}
	return t.sum / speakerWindow
}

// sampleSpeakersLocked takes one level sample of every audio producer
// (router lock held).
func (r *router) sampleSpeakersLocked() {
	sp := &r.speaker
	for pr := range sp.tracks {
		if r.producers[pr.id] != pr {
			delete(sp.tracks, pr)
		}
	}
	for _, pr := range r.producers {
		if pr.ctl.levelID == 0 {
			continue
		}
		t := sp.tracks[pr]
		if t == nil {
			if sp.tracks == nil {
				sp.tracks = map[*producer]*speakerTrack{}
			}
			t = &speakerTrack{}
			sp.tracks[pr] = t
		}
		t.push(pr.ctl.takeLevel())
	}
}

// decideSpeakerLocked applies the rules above and tells every participant
// of a change (router lock held).
func (r *router) decideSpeakerLocked() {
	sp := &r.speaker
	if len(sp.tracks) == 0 {
		return
	}
	var best *producer
	bestScore := 0.0
	for pr, t := range sp.tracks {
		if sc := t.score(); best == nil || sc > bestScore || (sc == bestScore && pr.seqNo < best.seqNo) {
			best, bestScore = pr, sc
		}
	}
	if bestScore < speakerMinScore || best == sp.current {
		return
	}
	if cur := sp.tracks[sp.current]; cur != nil {
		if cs := cur.score(); cs >= speakerMinScore && bestScore <= cs*speakerSwitchRatio+speakerSwitchExtra {
			return
		}
	}
	sp.current = best
	r.sfu.ctr.speakerChanges.Add(1)
	r.sfu.notify.activeSpeakerLocked(r, best)
}
