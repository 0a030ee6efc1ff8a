"""A synthetic "storyboard world": classes made of atomic actions, written as real videos.

`make demo` and `make study` need a dataset that exists on any machine, so this package draws
one (numpy only) and writes it with PyAV (mpeg4) in the generic `list` layout the trainer
reads:

    <out>/atomic_actions.json         {atomic id: caption}
    <out>/phrasings.json              {atomic id: [caption, other phrasings...]}
    <out>/world.json                  classes, their action sequences, order-only pairs,
                                      seed, settings
    <out>/seen/classes.csv            `id,name` (8 classes: supervised and few-shot)
    <out>/seen/train.txt, test.txt    `videos/<class_slug>/<id>.mp4 <class id>`
    <out>/seen/videos/<class_slug>/<id>.mp4 and <id>.json (per-frame ground truth)
    <out>/unseen/...                  the same for 4 zero-shot classes (their few training
                                      videos exist for the layout only; nothing trains on them)

A world is written all or nothing: into the hidden sibling `.<out>.partial` (locked while
written; a killed writer's is resumed), then renamed onto `<out>`. A folder holding
`world.json` is a complete world; one that holds neither that nor nothing is refused.

The design (format 3, fixed before any result of it was seen) meets the paper's premise that
a CLIP recognises what each frame shows:

* Every atomic action has a single-frame signature, held for the whole of its segment: a
  pose (in the air, squashed, tilted), a size (big, small), a colour (red) or a prop (a flag,
  a box). Where the square stands drifts at random and carries no meaning.
* Classes share actions and appearance (always the same square); several start with the
  same action; some pairs differ in one action ("hop then duck" / "hop then wave") and some
  only in order ("hop then duck" / "duck then hop": `ORDER_ONLY_PAIRS`; no bag-of-frames
  mode can tell those apart).
* Inside a video the actions have uneven random durations and 10-30% of the frames are
  unrelated to the class (the square stands still, or a ball rolls past) at random places.
* Unseen classes recombine the seen classes' actions in sequences no seen class has.

Modules: `definition` (the atomic actions, the classes, `default_world`, and per class a
faithful sub-text set and two worse ones: `candidate_sets`), `render` (each video's timeline
and frames, written as mpeg4) and `write` (`write_world`: the folders and JSON files, all or
nothing; `write_candidates` ships the candidate sets as JSON for `subtext_gen generate --llm
file`).
"""
