import glob, re, xml.etree.ElementTree as ET, statistics, random, sys
def text_of(e):
    out=[]
    def walk(n):
        if n.text: out.append(n.text)
        for c in n:
            if c.tag in ("see","seealso","paramref","typeparamref"):
                ref=c.get("cref") or c.get("name") or c.get("langword") or ""
                ref=ref.split(":")[-1].split("(")[0].split(".")[-1].split("`")[0]
                out.append(c.text or ref)
            else:
                walk(c)
            if c.tail: out.append(c.tail)
    walk(e)
    return " ".join("".join(out).split())
summaries=[]; fulls=[]; bytype={}
for f in sorted(glob.glob("*.xml")):
    try: root=ET.parse(f).getroot()
    except Exception: continue
    for m in root.iter("member"):
        name=m.get("name","")
        parts=[]; summary=None
        for e in m:
            if e.tag in ("summary","remarks","returns","value","param","exception"):
                t=text_of(e)
                if t and len(t)>3:
                    t = t if t.endswith(".") else t+"."
                    parts.append(t)
                    if e.tag=="summary": summary=t
        if summary and len(summary)>=12: summaries.append(summary)
        t=" ".join(parts)
        if len(t)>=12: fulls.append(t)
        typ=name[2:].rsplit(".",1)[0] if name[:2] in ("M:","P:","F:","E:") else name[2:]
        if t: bytype.setdefault(typ,[]).append(t)
random.seed(20261130)
picked=random.sample(summaries, 1100)+random.sample(fulls, 750)
longs=[]
types=sorted(k for k,v in bytype.items() if len(v)>=4)
random.shuffle(types)
for k in types:
    t=""
    for s in bytype[k]:
        if len(t)+len(s)+1>2000: break
        t=(t+" "+s).strip()
    if len(t)>500: longs.append(t)
    if len(longs)>=150: break
seen=set(); out=[]
allt=picked+longs
random.shuffle(allt)
for t in allt:
    if t not in seen: seen.add(t); out.append(t)
L=[len(t) for t in out]
print(len(out), statistics.median(L), max(L), sum(L), file=sys.stderr)
open(sys.argv[1],"w").write("\n".join(out[:2000])+"\n")
