package recsys_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/tandem-ai/tandem/recsys"
)

// The life of a model: load interactions, build, recommend, take a feedback
// event, recommend again, write the rebuild's output.
func Example() {
	const log = `user,item,event,value,kind
ann,t1,view,,template
ann,t2,accepted,,template
bob,t1,view,,template
bob,t2,view,,template
bob,t3,purchase,,topic
cid,t3,view,,topic
cid,t4,rating,5,topic
`
	st, err := recsys.NewStore(recsys.StoreConfig{})
	if err != nil {
		panic(err)
	}
	if err := st.Load(strings.NewReader(log), recsys.FormatCSV); err != nil {
		panic(err)
	}
	m, err := recsys.Build(context.Background(), st, recsys.Config{})
	if err != nil {
		panic(err)
	}
	show := func(user string) {
		recs, _ := m.Recommend(user, recsys.RecOptions{N: 3})
		fmt.Print(user, ":")
		for _, r := range recs {
			fmt.Printf(" %s %.3f", r.Item, r.Score)
		}
		fmt.Println()
	}
	show("ann")

	// ann rates t3 highly: bob stays her neighbour, and cid, who also rated
	// t3, becomes one, so cid's t4 enters her list.
	if _, err := m.Apply(recsys.Event{ID: "evt-1", User: "ann", Item: "t3", Type: recsys.EventRating, Value: 5}); err != nil {
		panic(err)
	}
	show("ann")

	if _, err := recsys.WriteRecommendations(os.Stdout, m, recsys.RecOptions{N: 2, Kinds: []string{"topic"}}); err != nil {
		panic(err)
	}
	// Output:
	// ann: t3 1.167
	// ann: t4 0.757
	// {"user":"ann","items":[{"item":"t4","score":0.7565344125032425}]}
	// {"user":"bob","items":[{"item":"t4","score":0.9435641765594482}]}
	// {"user":"cid","items":[]}
}
